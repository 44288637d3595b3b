//! VMCS field encodings: one enum, [`VmcsField`], with every field of SDM Vol. 3D Appendix B
//! ("Field Encoding in VMCS", Tables B-1 to B-15).
//!
//! A field's 32-bit encoding is the operand of VMREAD and VMWRITE. Its bits say everything about
//! the field's shape (SDM Vol. 3C §25.11.2, "VMREAD, VMWRITE, and Encodings of VMCS Fields"):
//!
//! | bits  | meaning                                                                     |
//! |-------|-----------------------------------------------------------------------------|
//! | 0     | access type: 0 = full, 1 = high (the upper 32 bits of a 64-bit field)       |
//! | 9:1   | index                                                                       |
//! | 11:10 | type: 0 = control, 1 = VM-exit information, 2 = guest state, 3 = host state |
//! | 12    | reserved, must be 0                                                         |
//! | 14:13 | width: 0 = 16-bit, 1 = 64-bit, 2 = 32-bit, 3 = natural width                |
//! | 31:15 | reserved, must be 0                                                         |
//!
//! so [`VmcsField::width`], [`VmcsField::kind`] and [`VmcsField::index`] are computed from the
//! discriminant, never tabulated.
//!
//! The list is the union of Appendix B over SDM editions: every field of the December 2024
//! edition (order number 325462-086), plus the fields that later editions add (FRED state,
//! injected- and original-event data, MSR data for the MSR-list instructions, SEAM-guest KeyID).
//! The ENCLV-exiting bitmap, listed from 2019 to 2024, is kept although the newest edition no
//! longer lists it. Names are the familiar ones of the 2024 edition; where a later edition renamed
//! a field (the FRED editions call the interruption-information fields "event identification"),
//! the variant's documentation gives both. Section numbers are those of the 2023–2024 editions;
//! later editions renumber the VMX chapters by two, so every citation also names the section.
//!
//! Read-only fields (the VM-exit information fields) have no write path in the types: a VMWRITE
//! implementation must obtain a [`WritableField`] through [`VmcsEncoding::writable`], which
//! refuses them unless the processor reports "VMWRITE to any supported field" (IA32_VMX_MISC bit
//! 29, SDM Vol. 3D §A.6), as the [`VmwriteScope`] passed in says.

/// The width of a VMCS field, bits 14:13 of its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum VmcsFieldWidth {
    /// 16 bits.
    Bits16 = 0,
    /// 64 bits; the only width with a "high" access encoding.
    Bits64 = 1,
    /// 32 bits.
    Bits32 = 2,
    /// Natural width: 64 bits on processors that support Intel 64, as this one does.
    Natural = 3,
}

impl VmcsFieldWidth {
    /// The width named by bits 14:13 of `encoding`.
    pub const fn of_encoding(encoding: u32) -> Self {
        match (encoding >> 13) & 3 {
            0 => Self::Bits16,
            1 => Self::Bits64,
            2 => Self::Bits32,
            _ => Self::Natural,
        }
    }

    /// The size of the field in bytes (natural width is 8 on a 64-bit processor).
    pub const fn bytes(self) -> usize {
        match self {
            Self::Bits16 => 2,
            Self::Bits32 => 4,
            Self::Bits64 | Self::Natural => 8,
        }
    }

    /// The bits of a 64-bit value that a field of this width holds: VMWRITE ignores the others
    /// and VMREAD returns them as zero (SDM Vol. 3C §31.3, VMREAD and VMWRITE).
    pub const fn value_mask(self) -> u64 {
        match self {
            Self::Bits16 => 0xffff,
            Self::Bits32 => 0xffff_ffff,
            Self::Bits64 | Self::Natural => u64::MAX,
        }
    }
}

/// The type of a VMCS field, bits 11:10 of its encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum VmcsFieldKind {
    /// VM-execution, VM-exit and VM-entry control fields.
    Control = 0,
    /// VM-exit information fields ("read-only data" in Appendix B).
    ExitInformation = 1,
    /// Guest-state area.
    GuestState = 2,
    /// Host-state area.
    HostState = 3,
}

impl VmcsFieldKind {
    /// The type named by bits 11:10 of `encoding`.
    pub const fn of_encoding(encoding: u32) -> Self {
        match (encoding >> 10) & 3 {
            0 => Self::Control,
            1 => Self::ExitInformation,
            2 => Self::GuestState,
            _ => Self::HostState,
        }
    }
}

/// The access type of an encoding, bit 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmcsAccess {
    /// The whole field (bits 63:0 of a 64-bit field).
    Full,
    /// Bits 63:32 of a 64-bit field, read and written as the low 32 bits of the operand.
    High,
}

/// Which fields VMWRITE may write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmwriteScope {
    /// Every field except the VM-exit information fields (IA32_VMX_MISC bit 29 clear).
    ExceptExitInformation,
    /// Every supported field (IA32_VMX_MISC bit 29 set).
    AnyField,
}

/// The encoding bits that must be zero: bit 12 and bits 31:15.
pub const ENCODING_RESERVED_BITS: u32 = 0xffff_9000;

macro_rules! vmcs_fields {
    ($( $(#[$doc:meta])* $variant:ident = $encoding:literal, $name:literal; )*) => {
        /// A VMCS field, with its full-access encoding as discriminant.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum VmcsField {
            $(
                #[doc = $name]
                $(#[$doc])*
                $variant = $encoding,
            )*
        }

        impl VmcsField {
            /// Every field of Appendix B, in encoding order.
            pub const ALL: &'static [VmcsField] = &[$(VmcsField::$variant,)*];

            /// The field's name as the SDM writes it in Appendix B.
            pub const fn name(self) -> &'static str {
                match self {
                    $(VmcsField::$variant => $name,)*
                }
            }

            /// The field whose full-access encoding is `encoding`, if there is one.
            pub const fn from_full_encoding(encoding: u32) -> Option<Self> {
                match encoding {
                    $($encoding => Some(VmcsField::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

vmcs_fields! {
    // Table B-1.
    Vpid = 0x0000, "Virtual-processor identifier (VPID)";
    PostedInterruptNotificationVector = 0x0002, "Posted-interrupt notification vector";
    EptpIndex = 0x0004, "EPTP index";
    HlatPrefixSize = 0x0006, "HLAT prefix size";
    LastPidPointerIndex = 0x0008, "Last PID-pointer index";
    // Table B-2.
    GuestEsSelector = 0x0800, "Guest ES selector";
    GuestCsSelector = 0x0802, "Guest CS selector";
    GuestSsSelector = 0x0804, "Guest SS selector";
    GuestDsSelector = 0x0806, "Guest DS selector";
    GuestFsSelector = 0x0808, "Guest FS selector";
    GuestGsSelector = 0x080a, "Guest GS selector";
    GuestLdtrSelector = 0x080c, "Guest LDTR selector";
    GuestTrSelector = 0x080e, "Guest TR selector";
    GuestInterruptStatus = 0x0810, "Guest interrupt status";
    PmlIndex = 0x0812, "PML index";
    GuestUinv = 0x0814, "Guest UINV";
    // Table B-3.
    HostEsSelector = 0x0c00, "Host ES selector";
    HostCsSelector = 0x0c02, "Host CS selector";
    HostSsSelector = 0x0c04, "Host SS selector";
    HostDsSelector = 0x0c06, "Host DS selector";
    HostFsSelector = 0x0c08, "Host FS selector";
    HostGsSelector = 0x0c0a, "Host GS selector";
    HostTrSelector = 0x0c0c, "Host TR selector";
    // Table B-4.
    IoBitmapA = 0x2000, "Address of I/O bitmap A";
    IoBitmapB = 0x2002, "Address of I/O bitmap B";
    MsrBitmaps = 0x2004, "Address of MSR bitmaps";
    VmExitMsrStoreAddress = 0x2006, "VM-exit MSR-store address";
    VmExitMsrLoadAddress = 0x2008, "VM-exit MSR-load address";
    VmEntryMsrLoadAddress = 0x200a, "VM-entry MSR-load address";
    ExecutiveVmcsPointer = 0x200c, "Executive-VMCS pointer";
    PmlAddress = 0x200e, "PML address";
    TscOffset = 0x2010, "TSC offset";
    VirtualApicAddress = 0x2012, "Virtual-APIC address";
    ApicAccessAddress = 0x2014, "APIC-access address";
    PostedInterruptDescriptorAddress = 0x2016, "Posted-interrupt descriptor address";
    VmFunctionControls = 0x2018, "VM-function controls";
    /// EPTP.
    EptPointer = 0x201a, "EPT pointer";
    EoiExitBitmap0 = 0x201c, "EOI-exit bitmap 0";
    EoiExitBitmap1 = 0x201e, "EOI-exit bitmap 1";
    EoiExitBitmap2 = 0x2020, "EOI-exit bitmap 2";
    EoiExitBitmap3 = 0x2022, "EOI-exit bitmap 3";
    EptpListAddress = 0x2024, "EPTP-list address";
    VmreadBitmapAddress = 0x2026, "VMREAD-bitmap address";
    VmwriteBitmapAddress = 0x2028, "VMWRITE-bitmap address";
    VirtualizationExceptionInfoAddress = 0x202a, "Virtualization-exception information address";
    XssExitingBitmap = 0x202c, "XSS-exiting bitmap";
    EnclsExitingBitmap = 0x202e, "ENCLS-exiting bitmap";
    SubPagePermissionTablePointer = 0x2030, "Sub-page-permission-table pointer";
    TscMultiplier = 0x2032, "TSC multiplier";
    TertiaryProcBasedControls = 0x2034, "Tertiary processor-based VM-execution controls";
    /// Listed in the 2019–2024 editions (Linux's `ENCLV_EXITING_BITMAP`); the 2026 edition no longer lists it.
    EnclvExitingBitmap = 0x2036, "ENCLV-exiting bitmap";
    LowPasidDirectoryAddress = 0x2038, "Low PASID directory address";
    HighPasidDirectoryAddress = 0x203a, "High PASID directory address";
    /// Used by SEAM (Intel TDX); "SEAM shared EPT pointer" in the 2026 edition.
    SharedEptPointer = 0x203c, "Shared EPT pointer";
    PconfigExitingBitmap = 0x203e, "PCONFIG-exiting bitmap";
    /// HLATP.
    HlatPointer = 0x2040, "Hypervisor-managed linear-address translation pointer";
    PidPointerTableAddress = 0x2042, "PID-pointer table address";
    SecondaryVmExitControls = 0x2044, "Secondary VM-exit controls";
    SpecCtrlMask = 0x204a, "IA32_SPEC_CTRL mask";
    SpecCtrlShadow = 0x204c, "IA32_SPEC_CTRL shadow";
    InjectedEventData = 0x2052, "Injected-event data";
    // Table B-5.
    GuestPhysicalAddress = 0x2400, "Guest-physical address";
    MsrData = 0x2402, "MSR data";
    OriginalEventData = 0x2404, "Original-event data";
    // Table B-6.
    VmcsLinkPointer = 0x2800, "VMCS link pointer";
    GuestIa32Debugctl = 0x2802, "Guest IA32_DEBUGCTL";
    GuestIa32Pat = 0x2804, "Guest IA32_PAT";
    GuestIa32Efer = 0x2806, "Guest IA32_EFER";
    GuestIa32PerfGlobalCtrl = 0x2808, "Guest IA32_PERF_GLOBAL_CTRL";
    GuestPdpte0 = 0x280a, "Guest PDPTE0";
    GuestPdpte1 = 0x280c, "Guest PDPTE1";
    GuestPdpte2 = 0x280e, "Guest PDPTE2";
    GuestPdpte3 = 0x2810, "Guest PDPTE3";
    GuestIa32Bndcfgs = 0x2812, "Guest IA32_BNDCFGS";
    GuestIa32RtitCtl = 0x2814, "Guest IA32_RTIT_CTL";
    GuestIa32LbrCtl = 0x2816, "Guest IA32_LBR_CTL";
    GuestIa32Pkrs = 0x2818, "Guest IA32_PKRS";
    GuestIa32FredConfig = 0x281a, "Guest IA32_FRED_CONFIG";
    GuestIa32FredRsp1 = 0x281c, "Guest IA32_FRED_RSP1";
    GuestIa32FredRsp2 = 0x281e, "Guest IA32_FRED_RSP2";
    GuestIa32FredRsp3 = 0x2820, "Guest IA32_FRED_RSP3";
    GuestIa32FredStklvls = 0x2822, "Guest IA32_FRED_STKLVLS";
    GuestIa32FredSsp1 = 0x2824, "Guest IA32_FRED_SSP1";
    GuestIa32FredSsp2 = 0x2826, "Guest IA32_FRED_SSP2";
    GuestIa32FredSsp3 = 0x2828, "Guest IA32_FRED_SSP3";
    // Table B-7.
    HostIa32Pat = 0x2c00, "Host IA32_PAT";
    HostIa32Efer = 0x2c02, "Host IA32_EFER";
    HostIa32PerfGlobalCtrl = 0x2c04, "Host IA32_PERF_GLOBAL_CTRL";
    HostIa32Pkrs = 0x2c06, "Host IA32_PKRS";
    HostIa32FredConfig = 0x2c08, "Host IA32_FRED_CONFIG";
    HostIa32FredRsp1 = 0x2c0a, "Host IA32_FRED_RSP1";
    HostIa32FredRsp2 = 0x2c0c, "Host IA32_FRED_RSP2";
    HostIa32FredRsp3 = 0x2c0e, "Host IA32_FRED_RSP3";
    HostIa32FredStklvls = 0x2c10, "Host IA32_FRED_STKLVLS";
    HostIa32FredSsp1 = 0x2c12, "Host IA32_FRED_SSP1";
    HostIa32FredSsp2 = 0x2c14, "Host IA32_FRED_SSP2";
    HostIa32FredSsp3 = 0x2c16, "Host IA32_FRED_SSP3";
    // Table B-8.
    PinBasedControls = 0x4000, "Pin-based VM-execution controls";
    PrimaryProcBasedControls = 0x4002, "Primary processor-based VM-execution controls";
    ExceptionBitmap = 0x4004, "Exception bitmap";
    PageFaultErrorCodeMask = 0x4006, "Page-fault error-code mask";
    PageFaultErrorCodeMatch = 0x4008, "Page-fault error-code match";
    Cr3TargetCount = 0x400a, "CR3-target count";
    /// Called "VM-exit controls" before the secondary VM-exit controls existed.
    PrimaryVmExitControls = 0x400c, "Primary VM-exit controls";
    VmExitMsrStoreCount = 0x400e, "VM-exit MSR-store count";
    VmExitMsrLoadCount = 0x4010, "VM-exit MSR-load count";
    VmEntryControls = 0x4012, "VM-entry controls";
    VmEntryMsrLoadCount = 0x4014, "VM-entry MSR-load count";
    /// Called "injected-event identification" in the FRED editions of the SDM.
    VmEntryInterruptionInfo = 0x4016, "VM-entry interruption-information field";
    /// Called "injected-event error code" in the FRED editions of the SDM.
    VmEntryExceptionErrorCode = 0x4018, "VM-entry exception error code";
    VmEntryInstructionLength = 0x401a, "VM-entry instruction length";
    TprThreshold = 0x401c, "TPR threshold";
    SecondaryProcBasedControls = 0x401e, "Secondary processor-based VM-execution controls";
    PleGap = 0x4020, "PLE_Gap";
    PleWindow = 0x4022, "PLE_Window";
    InstructionTimeoutControl = 0x4024, "Instruction-timeout control";
    SeamGuestKeyId = 0x4026, "SEAM-guest KeyID";
    // Table B-9.
    VmInstructionError = 0x4400, "VM-instruction error";
    ExitReason = 0x4402, "Exit reason";
    /// Called "exiting-event identification" in the FRED editions of the SDM.
    VmExitInterruptionInfo = 0x4404, "VM-exit interruption information";
    /// Called "exiting-event error code" in the FRED editions of the SDM.
    VmExitInterruptionErrorCode = 0x4406, "VM-exit interruption error code";
    /// Called "original-event identification" in the FRED editions of the SDM.
    IdtVectoringInfo = 0x4408, "IDT-vectoring information field";
    /// Called "original-event error code" in the FRED editions of the SDM.
    IdtVectoringErrorCode = 0x440a, "IDT-vectoring error code";
    VmExitInstructionLength = 0x440c, "VM-exit instruction length";
    VmExitInstructionInfo = 0x440e, "VM-exit instruction information";
    // Table B-10.
    GuestEsLimit = 0x4800, "Guest ES limit";
    GuestCsLimit = 0x4802, "Guest CS limit";
    GuestSsLimit = 0x4804, "Guest SS limit";
    GuestDsLimit = 0x4806, "Guest DS limit";
    GuestFsLimit = 0x4808, "Guest FS limit";
    GuestGsLimit = 0x480a, "Guest GS limit";
    GuestLdtrLimit = 0x480c, "Guest LDTR limit";
    GuestTrLimit = 0x480e, "Guest TR limit";
    GuestGdtrLimit = 0x4810, "Guest GDTR limit";
    GuestIdtrLimit = 0x4812, "Guest IDTR limit";
    GuestEsAccessRights = 0x4814, "Guest ES access rights";
    GuestCsAccessRights = 0x4816, "Guest CS access rights";
    GuestSsAccessRights = 0x4818, "Guest SS access rights";
    GuestDsAccessRights = 0x481a, "Guest DS access rights";
    GuestFsAccessRights = 0x481c, "Guest FS access rights";
    GuestGsAccessRights = 0x481e, "Guest GS access rights";
    GuestLdtrAccessRights = 0x4820, "Guest LDTR access rights";
    GuestTrAccessRights = 0x4822, "Guest TR access rights";
    GuestInterruptibilityState = 0x4824, "Guest interruptibility state";
    GuestActivityState = 0x4826, "Guest activity state";
    GuestSmbase = 0x4828, "Guest SMBASE";
    GuestIa32SysenterCs = 0x482a, "Guest IA32_SYSENTER_CS";
    VmxPreemptionTimerValue = 0x482e, "VMX-preemption timer value";
    // Table B-11.
    HostIa32SysenterCs = 0x4c00, "Host IA32_SYSENTER_CS";
    // Table B-12.
    Cr0GuestHostMask = 0x6000, "CR0 guest/host mask";
    Cr4GuestHostMask = 0x6002, "CR4 guest/host mask";
    Cr0ReadShadow = 0x6004, "CR0 read shadow";
    Cr4ReadShadow = 0x6006, "CR4 read shadow";
    Cr3TargetValue0 = 0x6008, "CR3-target value 0";
    Cr3TargetValue1 = 0x600a, "CR3-target value 1";
    Cr3TargetValue2 = 0x600c, "CR3-target value 2";
    Cr3TargetValue3 = 0x600e, "CR3-target value 3";
    // Table B-13.
    ExitQualification = 0x6400, "Exit qualification";
    IoRcx = 0x6402, "I/O RCX";
    IoRsi = 0x6404, "I/O RSI";
    IoRdi = 0x6406, "I/O RDI";
    IoRip = 0x6408, "I/O RIP";
    GuestLinearAddress = 0x640a, "Guest-linear address";
    // Table B-14.
    GuestCr0 = 0x6800, "Guest CR0";
    GuestCr3 = 0x6802, "Guest CR3";
    GuestCr4 = 0x6804, "Guest CR4";
    GuestEsBase = 0x6806, "Guest ES base";
    GuestCsBase = 0x6808, "Guest CS base";
    GuestSsBase = 0x680a, "Guest SS base";
    GuestDsBase = 0x680c, "Guest DS base";
    GuestFsBase = 0x680e, "Guest FS base";
    GuestGsBase = 0x6810, "Guest GS base";
    GuestLdtrBase = 0x6812, "Guest LDTR base";
    GuestTrBase = 0x6814, "Guest TR base";
    GuestGdtrBase = 0x6816, "Guest GDTR base";
    GuestIdtrBase = 0x6818, "Guest IDTR base";
    GuestDr7 = 0x681a, "Guest DR7";
    GuestRsp = 0x681c, "Guest RSP";
    GuestRip = 0x681e, "Guest RIP";
    GuestRflags = 0x6820, "Guest RFLAGS";
    GuestPendingDebugExceptions = 0x6822, "Guest pending debug exceptions";
    GuestIa32SysenterEsp = 0x6824, "Guest IA32_SYSENTER_ESP";
    GuestIa32SysenterEip = 0x6826, "Guest IA32_SYSENTER_EIP";
    GuestIa32SCet = 0x6828, "Guest IA32_S_CET";
    GuestSsp = 0x682a, "Guest SSP";
    GuestIa32InterruptSspTableAddr = 0x682c, "Guest IA32_INTERRUPT_SSP_TABLE_ADDR";
    // Table B-15.
    HostCr0 = 0x6c00, "Host CR0";
    HostCr3 = 0x6c02, "Host CR3";
    HostCr4 = 0x6c04, "Host CR4";
    HostFsBase = 0x6c06, "Host FS base";
    HostGsBase = 0x6c08, "Host GS base";
    HostTrBase = 0x6c0a, "Host TR base";
    HostGdtrBase = 0x6c0c, "Host GDTR base";
    HostIdtrBase = 0x6c0e, "Host IDTR base";
    HostIa32SysenterEsp = 0x6c10, "Host IA32_SYSENTER_ESP";
    HostIa32SysenterEip = 0x6c12, "Host IA32_SYSENTER_EIP";
    HostRsp = 0x6c14, "Host RSP";
    HostRip = 0x6c16, "Host RIP";
    HostIa32SCet = 0x6c18, "Host IA32_S_CET";
    HostSsp = 0x6c1a, "Host SSP";
    HostIa32InterruptSspTableAddr = 0x6c1c, "Host IA32_INTERRUPT_SSP_TABLE_ADDR";
}

impl VmcsField {
    /// The encoding of full access to the field (the discriminant).
    pub const fn encoding(self) -> u32 {
        self as u32
    }

    /// The encoding of high access (bits 63:32), for 64-bit fields only.
    pub const fn high_encoding(self) -> Option<u32> {
        match self.width() {
            VmcsFieldWidth::Bits64 => Some(self.encoding() | 1),
            _ => None,
        }
    }

    /// The field's width, from bits 14:13 of its encoding.
    pub const fn width(self) -> VmcsFieldWidth {
        VmcsFieldWidth::of_encoding(self.encoding())
    }

    /// The field's type, from bits 11:10 of its encoding.
    pub const fn kind(self) -> VmcsFieldKind {
        VmcsFieldKind::of_encoding(self.encoding())
    }

    /// The field's index, bits 9:1 of its encoding.
    pub const fn index(self) -> u16 {
        ((self.encoding() >> 1) & 0x1ff) as u16
    }

    /// Whether the field is a VM-exit information field, which VMWRITE may write only when
    /// IA32_VMX_MISC bit 29 is set.
    pub const fn is_exit_information(self) -> bool {
        matches!(self.kind(), VmcsFieldKind::ExitInformation)
    }

    /// Decodes a VMREAD/VMWRITE operand. Returns `None` for every encoding that names no field:
    /// reserved bits set (bit 12, bits 31:15), high access to a field that is not 64 bits wide,
    /// or an index that Appendix B does not define (SDM Vol. 3C §31.3: such a VMREAD or VMWRITE
    /// fails with VM-instruction error 12).
    pub const fn from_encoding(encoding: u32) -> Option<VmcsEncoding> {
        if encoding & ENCODING_RESERVED_BITS != 0 {
            return None;
        }
        let access = if encoding & 1 == 0 {
            VmcsAccess::Full
        } else {
            VmcsAccess::High
        };
        match Self::from_full_encoding(encoding & !1) {
            Some(field) => match (access, field.width()) {
                (VmcsAccess::High, VmcsFieldWidth::Bits64) | (VmcsAccess::Full, _) => {
                    Some(VmcsEncoding { field, access })
                }
                (VmcsAccess::High, _) => None,
            },
            None => None,
        }
    }

    /// The field as a VMWRITE target under `scope`, or `None` if VMWRITE must fail with
    /// VM-instruction error 13 ("VMWRITE to read-only VMCS component").
    pub const fn writable(self, scope: VmwriteScope) -> Option<WritableField> {
        match (scope, self.is_exit_information()) {
            (VmwriteScope::ExceptExitInformation, true) => None,
            _ => Some(WritableField(self)),
        }
    }
}

/// A processor capability on which the existence of a VMCS field depends (the footnotes of the
/// Appendix B tables): support for the 1-setting of a control, or a feature outside VMX.
///
/// A processor supports a field if the field has no requirement or if it has any of the
/// capabilities [`VmcsField::requirements`] lists; VMREAD and VMWRITE of an unsupported field fail
/// with VM-instruction error 12 like those of an unknown encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// The 1-setting of a pin-based VM-execution control ([`crate::vmx::controls::pin_based`]).
    PinBased(u32),
    /// The 1-setting of a primary processor-based control ([`crate::vmx::controls::primary_proc`]).
    PrimaryProc(u32),
    /// The 1-setting of a secondary processor-based control ([`crate::vmx::controls::secondary_proc`]).
    SecondaryProc(u32),
    /// The 1-setting of a tertiary processor-based control ([`crate::vmx::controls::tertiary_proc`]).
    TertiaryProc(u64),
    /// The 1-setting of a primary VM-exit control ([`crate::vmx::controls::exit`]).
    Exit(u32),
    /// The 1-setting of a secondary VM-exit control ([`crate::vmx::controls::secondary_exit`]).
    SecondaryExit(u64),
    /// The 1-setting of a VM-entry control ([`crate::vmx::controls::entry`]).
    Entry(u32),
    /// The 1-setting of a VM-function control (bit `n` of IA32_VMX_VMFUNC).
    VmFunction(u64),
    /// FRED transitions (`CPUID.(EAX=7,ECX=1):EAX[17]`).
    Fred,
    /// SEAM (Intel TDX module) operation, through the "SEAM guest-physical address width"
    /// control, which this crate does not otherwise describe.
    Seam,
}

impl VmcsField {
    /// The capabilities of which the processor must have at least one to support this field;
    /// empty for the fields every VMX processor has (SDM Vol. 3D Appendix B, table footnotes).
    pub const fn requirements(self) -> &'static [Capability] {
        use crate::vmx::controls::{
            entry, exit, pin_based, primary_proc, secondary_exit, secondary_proc, tertiary_proc,
        };
        use Capability::*;
        match self {
            Self::Vpid => &[SecondaryProc(secondary_proc::ENABLE_VPID)],
            Self::PostedInterruptNotificationVector | Self::PostedInterruptDescriptorAddress => {
                &[PinBased(pin_based::PROCESS_POSTED_INTERRUPTS)]
            }
            Self::EptpIndex | Self::VirtualizationExceptionInfoAddress => {
                &[SecondaryProc(secondary_proc::EPT_VIOLATION_VE)]
            }
            Self::HlatPrefixSize | Self::HlatPointer => &[TertiaryProc(tertiary_proc::ENABLE_HLAT)],
            Self::LastPidPointerIndex | Self::PidPointerTableAddress => {
                &[TertiaryProc(tertiary_proc::IPI_VIRTUALIZATION)]
            }
            Self::GuestInterruptStatus
            | Self::EoiExitBitmap0
            | Self::EoiExitBitmap1
            | Self::EoiExitBitmap2
            | Self::EoiExitBitmap3 => &[SecondaryProc(secondary_proc::VIRTUAL_INTERRUPT_DELIVERY)],
            Self::PmlIndex | Self::PmlAddress => &[SecondaryProc(secondary_proc::ENABLE_PML)],
            Self::GuestUinv => &[Exit(exit::CLEAR_UINV), Entry(entry::LOAD_UINV)],
            Self::MsrBitmaps => &[PrimaryProc(primary_proc::USE_MSR_BITMAPS)],
            Self::VirtualApicAddress | Self::TprThreshold => {
                &[PrimaryProc(primary_proc::USE_TPR_SHADOW)]
            }
            Self::ApicAccessAddress => &[SecondaryProc(secondary_proc::VIRTUALIZE_APIC_ACCESSES)],
            Self::VmFunctionControls => &[SecondaryProc(secondary_proc::ENABLE_VM_FUNCTIONS)],
            Self::EptPointer
            | Self::GuestPhysicalAddress
            | Self::GuestPdpte0
            | Self::GuestPdpte1
            | Self::GuestPdpte2
            | Self::GuestPdpte3 => &[SecondaryProc(secondary_proc::ENABLE_EPT)],
            Self::EptpListAddress => &[VmFunction(1 << 0)],
            Self::VmreadBitmapAddress | Self::VmwriteBitmapAddress => {
                &[SecondaryProc(secondary_proc::VMCS_SHADOWING)]
            }
            Self::XssExitingBitmap => &[SecondaryProc(secondary_proc::ENABLE_XSAVES_XRSTORS)],
            Self::EnclsExitingBitmap => &[SecondaryProc(secondary_proc::ENABLE_ENCLS_EXITING)],
            Self::SubPagePermissionTablePointer => {
                &[SecondaryProc(secondary_proc::SUB_PAGE_WRITE_PERMISSIONS)]
            }
            Self::TscMultiplier => &[SecondaryProc(secondary_proc::USE_TSC_SCALING)],
            Self::TertiaryProcBasedControls => {
                &[PrimaryProc(primary_proc::ACTIVATE_TERTIARY_CONTROLS)]
            }
            Self::EnclvExitingBitmap => &[SecondaryProc(secondary_proc::ENABLE_ENCLV_EXITING)],
            Self::LowPasidDirectoryAddress | Self::HighPasidDirectoryAddress => {
                &[SecondaryProc(secondary_proc::PASID_TRANSLATION)]
            }
            Self::SharedEptPointer | Self::SeamGuestKeyId => &[Seam],
            Self::PconfigExitingBitmap => &[SecondaryProc(secondary_proc::ENABLE_PCONFIG)],
            Self::SecondaryVmExitControls => &[Exit(exit::ACTIVATE_SECONDARY_CONTROLS)],
            Self::SpecCtrlMask | Self::SpecCtrlShadow => {
                &[TertiaryProc(tertiary_proc::VIRTUALIZE_IA32_SPEC_CTRL)]
            }
            Self::InjectedEventData | Self::OriginalEventData => &[Fred],
            Self::MsrData => &[TertiaryProc(tertiary_proc::ENABLE_MSR_LIST_INSTRUCTIONS)],
            Self::GuestIa32Pat => &[Entry(entry::LOAD_IA32_PAT), Exit(exit::SAVE_IA32_PAT)],
            Self::GuestIa32Efer => &[Entry(entry::LOAD_IA32_EFER), Exit(exit::SAVE_IA32_EFER)],
            Self::GuestIa32PerfGlobalCtrl => &[Entry(entry::LOAD_IA32_PERF_GLOBAL_CTRL)],
            Self::GuestIa32Bndcfgs => &[
                Entry(entry::LOAD_IA32_BNDCFGS),
                Exit(exit::CLEAR_IA32_BNDCFGS),
            ],
            Self::GuestIa32RtitCtl => &[
                Entry(entry::LOAD_IA32_RTIT_CTL),
                Exit(exit::CLEAR_IA32_RTIT_CTL),
            ],
            Self::GuestIa32LbrCtl => &[
                Entry(entry::LOAD_IA32_LBR_CTL),
                Exit(exit::CLEAR_IA32_LBR_CTL),
            ],
            Self::GuestIa32Pkrs => &[Entry(entry::LOAD_PKRS)],
            Self::GuestIa32FredConfig
            | Self::GuestIa32FredRsp1
            | Self::GuestIa32FredRsp2
            | Self::GuestIa32FredRsp3
            | Self::GuestIa32FredStklvls
            | Self::GuestIa32FredSsp1
            | Self::GuestIa32FredSsp2
            | Self::GuestIa32FredSsp3 => &[
                Entry(entry::LOAD_FRED),
                SecondaryExit(secondary_exit::SAVE_FRED),
            ],
            Self::HostIa32Pat => &[Exit(exit::LOAD_IA32_PAT)],
            Self::HostIa32Efer => &[Exit(exit::LOAD_IA32_EFER)],
            Self::HostIa32PerfGlobalCtrl => &[Exit(exit::LOAD_IA32_PERF_GLOBAL_CTRL)],
            Self::HostIa32Pkrs => &[Exit(exit::LOAD_PKRS)],
            Self::HostIa32FredConfig
            | Self::HostIa32FredRsp1
            | Self::HostIa32FredRsp2
            | Self::HostIa32FredRsp3
            | Self::HostIa32FredStklvls
            | Self::HostIa32FredSsp1
            | Self::HostIa32FredSsp2
            | Self::HostIa32FredSsp3 => &[SecondaryExit(secondary_exit::LOAD_FRED)],
            Self::SecondaryProcBasedControls => {
                &[PrimaryProc(primary_proc::ACTIVATE_SECONDARY_CONTROLS)]
            }
            Self::PleGap | Self::PleWindow => &[SecondaryProc(secondary_proc::PAUSE_LOOP_EXITING)],
            Self::InstructionTimeoutControl => {
                &[SecondaryProc(secondary_proc::INSTRUCTION_TIMEOUT)]
            }
            Self::VmxPreemptionTimerValue => &[PinBased(pin_based::ACTIVATE_PREEMPTION_TIMER)],
            Self::GuestIa32SCet | Self::GuestSsp | Self::GuestIa32InterruptSspTableAddr => {
                &[Entry(entry::LOAD_CET_STATE)]
            }
            Self::HostIa32SCet | Self::HostSsp | Self::HostIa32InterruptSspTableAddr => {
                &[Exit(exit::LOAD_CET_STATE)]
            }
            _ => &[],
        }
    }
}

impl core::fmt::Display for VmcsField {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({:#06x})", self.name(), self.encoding())
    }
}

/// The highest index (bits 9:1 of an encoding) among `fields`: the value a processor that
/// supports exactly these fields reports in IA32_VMX_VMCS_ENUM bits 9:1 (SDM Vol. 3D §A.9).
pub const fn highest_index(fields: &[VmcsField]) -> u16 {
    let mut highest = 0;
    let mut i = 0;
    while i < fields.len() {
        let index = fields[i].index();
        if index > highest {
            highest = index;
        }
        i += 1;
    }
    highest
}

/// A decoded VMREAD/VMWRITE operand: the field and the part of it the encoding accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmcsEncoding {
    /// The field.
    pub field: VmcsField,
    /// Full or high access.
    pub access: VmcsAccess,
}

impl VmcsEncoding {
    /// The raw encoding.
    pub const fn encoding(self) -> u32 {
        match self.access {
            VmcsAccess::Full => self.field.encoding(),
            VmcsAccess::High => self.field.encoding() | 1,
        }
    }

    /// The value VMREAD returns for this encoding when the field holds `stored`: the field's
    /// bits zero-extended, or for high access bits 63:32 in the low half.
    pub const fn read(self, stored: u64) -> u64 {
        match self.access {
            VmcsAccess::Full => stored & self.field.width().value_mask(),
            VmcsAccess::High => stored >> 32,
        }
    }

    /// This encoding as a VMWRITE target under `scope`; `None` for a read-only field.
    pub const fn writable(self, scope: VmwriteScope) -> Option<WritableEncoding> {
        match self.field.writable(scope) {
            Some(field) => Some(WritableEncoding {
                field,
                access: self.access,
            }),
            None => None,
        }
    }
}

/// A field that VMWRITE may write. Obtained only through [`VmcsField::writable`], so that a
/// write path that takes a `WritableField` cannot be handed a read-only field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WritableField(VmcsField);

impl WritableField {
    /// The field.
    pub const fn field(self) -> VmcsField {
        self.0
    }
}

/// A VMWRITE operand that names a writable field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WritableEncoding {
    field: WritableField,
    access: VmcsAccess,
}

impl WritableEncoding {
    /// The field written.
    pub const fn field(self) -> WritableField {
        self.field
    }

    /// Full or high access.
    pub const fn access(self) -> VmcsAccess {
        self.access
    }

    /// The new contents of the field after VMWRITE of `value` to this encoding when it held
    /// `stored`: full access keeps the bits the field's width holds; high access replaces bits
    /// 63:32 with the low 32 bits of `value` and keeps bits 31:0.
    pub const fn merge(self, stored: u64, value: u64) -> u64 {
        match self.access {
            VmcsAccess::Full => value & self.field.0.width().value_mask(),
            VmcsAccess::High => (stored & 0xffff_ffff) | (value << 32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::VmcsField::*;
    use super::VmcsFieldKind::*;
    use super::VmcsFieldWidth::*;
    use super::*;

    type Table = (
        &'static str,
        VmcsFieldWidth,
        VmcsFieldKind,
        &'static [(VmcsField, &'static str, u32)],
    );

    /// Appendix B, table by table: (field, SDM name, encoding), with the width and type that the
    /// table's title gives.
    const APPENDIX_B: &[Table] = &[
        (
            "B-1",
            Bits16,
            Control,
            &[
                (Vpid, "Virtual-processor identifier (VPID)", 0x0000),
                (
                    PostedInterruptNotificationVector,
                    "Posted-interrupt notification vector",
                    0x0002,
                ),
                (EptpIndex, "EPTP index", 0x0004),
                (HlatPrefixSize, "HLAT prefix size", 0x0006),
                (LastPidPointerIndex, "Last PID-pointer index", 0x0008),
            ],
        ),
        (
            "B-2",
            Bits16,
            GuestState,
            &[
                (GuestEsSelector, "Guest ES selector", 0x0800),
                (GuestCsSelector, "Guest CS selector", 0x0802),
                (GuestSsSelector, "Guest SS selector", 0x0804),
                (GuestDsSelector, "Guest DS selector", 0x0806),
                (GuestFsSelector, "Guest FS selector", 0x0808),
                (GuestGsSelector, "Guest GS selector", 0x080a),
                (GuestLdtrSelector, "Guest LDTR selector", 0x080c),
                (GuestTrSelector, "Guest TR selector", 0x080e),
                (GuestInterruptStatus, "Guest interrupt status", 0x0810),
                (PmlIndex, "PML index", 0x0812),
                (GuestUinv, "Guest UINV", 0x0814),
            ],
        ),
        (
            "B-3",
            Bits16,
            HostState,
            &[
                (HostEsSelector, "Host ES selector", 0x0c00),
                (HostCsSelector, "Host CS selector", 0x0c02),
                (HostSsSelector, "Host SS selector", 0x0c04),
                (HostDsSelector, "Host DS selector", 0x0c06),
                (HostFsSelector, "Host FS selector", 0x0c08),
                (HostGsSelector, "Host GS selector", 0x0c0a),
                (HostTrSelector, "Host TR selector", 0x0c0c),
            ],
        ),
        (
            "B-4",
            Bits64,
            Control,
            &[
                (IoBitmapA, "Address of I/O bitmap A", 0x2000),
                (IoBitmapB, "Address of I/O bitmap B", 0x2002),
                (MsrBitmaps, "Address of MSR bitmaps", 0x2004),
                (VmExitMsrStoreAddress, "VM-exit MSR-store address", 0x2006),
                (VmExitMsrLoadAddress, "VM-exit MSR-load address", 0x2008),
                (VmEntryMsrLoadAddress, "VM-entry MSR-load address", 0x200a),
                (ExecutiveVmcsPointer, "Executive-VMCS pointer", 0x200c),
                (PmlAddress, "PML address", 0x200e),
                (TscOffset, "TSC offset", 0x2010),
                (VirtualApicAddress, "Virtual-APIC address", 0x2012),
                (ApicAccessAddress, "APIC-access address", 0x2014),
                (
                    PostedInterruptDescriptorAddress,
                    "Posted-interrupt descriptor address",
                    0x2016,
                ),
                (VmFunctionControls, "VM-function controls", 0x2018),
                (EptPointer, "EPT pointer", 0x201a),
                (EoiExitBitmap0, "EOI-exit bitmap 0", 0x201c),
                (EoiExitBitmap1, "EOI-exit bitmap 1", 0x201e),
                (EoiExitBitmap2, "EOI-exit bitmap 2", 0x2020),
                (EoiExitBitmap3, "EOI-exit bitmap 3", 0x2022),
                (EptpListAddress, "EPTP-list address", 0x2024),
                (VmreadBitmapAddress, "VMREAD-bitmap address", 0x2026),
                (VmwriteBitmapAddress, "VMWRITE-bitmap address", 0x2028),
                (
                    VirtualizationExceptionInfoAddress,
                    "Virtualization-exception information address",
                    0x202a,
                ),
                (XssExitingBitmap, "XSS-exiting bitmap", 0x202c),
                (EnclsExitingBitmap, "ENCLS-exiting bitmap", 0x202e),
                (
                    SubPagePermissionTablePointer,
                    "Sub-page-permission-table pointer",
                    0x2030,
                ),
                (TscMultiplier, "TSC multiplier", 0x2032),
                (
                    TertiaryProcBasedControls,
                    "Tertiary processor-based VM-execution controls",
                    0x2034,
                ),
                (EnclvExitingBitmap, "ENCLV-exiting bitmap", 0x2036),
                (
                    LowPasidDirectoryAddress,
                    "Low PASID directory address",
                    0x2038,
                ),
                (
                    HighPasidDirectoryAddress,
                    "High PASID directory address",
                    0x203a,
                ),
                (SharedEptPointer, "Shared EPT pointer", 0x203c),
                (PconfigExitingBitmap, "PCONFIG-exiting bitmap", 0x203e),
                (
                    HlatPointer,
                    "Hypervisor-managed linear-address translation pointer",
                    0x2040,
                ),
                (PidPointerTableAddress, "PID-pointer table address", 0x2042),
                (
                    SecondaryVmExitControls,
                    "Secondary VM-exit controls",
                    0x2044,
                ),
                (SpecCtrlMask, "IA32_SPEC_CTRL mask", 0x204a),
                (SpecCtrlShadow, "IA32_SPEC_CTRL shadow", 0x204c),
                (InjectedEventData, "Injected-event data", 0x2052),
            ],
        ),
        (
            "B-5",
            Bits64,
            ExitInformation,
            &[
                (GuestPhysicalAddress, "Guest-physical address", 0x2400),
                (MsrData, "MSR data", 0x2402),
                (OriginalEventData, "Original-event data", 0x2404),
            ],
        ),
        (
            "B-6",
            Bits64,
            GuestState,
            &[
                (VmcsLinkPointer, "VMCS link pointer", 0x2800),
                (GuestIa32Debugctl, "Guest IA32_DEBUGCTL", 0x2802),
                (GuestIa32Pat, "Guest IA32_PAT", 0x2804),
                (GuestIa32Efer, "Guest IA32_EFER", 0x2806),
                (
                    GuestIa32PerfGlobalCtrl,
                    "Guest IA32_PERF_GLOBAL_CTRL",
                    0x2808,
                ),
                (GuestPdpte0, "Guest PDPTE0", 0x280a),
                (GuestPdpte1, "Guest PDPTE1", 0x280c),
                (GuestPdpte2, "Guest PDPTE2", 0x280e),
                (GuestPdpte3, "Guest PDPTE3", 0x2810),
                (GuestIa32Bndcfgs, "Guest IA32_BNDCFGS", 0x2812),
                (GuestIa32RtitCtl, "Guest IA32_RTIT_CTL", 0x2814),
                (GuestIa32LbrCtl, "Guest IA32_LBR_CTL", 0x2816),
                (GuestIa32Pkrs, "Guest IA32_PKRS", 0x2818),
                (GuestIa32FredConfig, "Guest IA32_FRED_CONFIG", 0x281a),
                (GuestIa32FredRsp1, "Guest IA32_FRED_RSP1", 0x281c),
                (GuestIa32FredRsp2, "Guest IA32_FRED_RSP2", 0x281e),
                (GuestIa32FredRsp3, "Guest IA32_FRED_RSP3", 0x2820),
                (GuestIa32FredStklvls, "Guest IA32_FRED_STKLVLS", 0x2822),
                (GuestIa32FredSsp1, "Guest IA32_FRED_SSP1", 0x2824),
                (GuestIa32FredSsp2, "Guest IA32_FRED_SSP2", 0x2826),
                (GuestIa32FredSsp3, "Guest IA32_FRED_SSP3", 0x2828),
            ],
        ),
        (
            "B-7",
            Bits64,
            HostState,
            &[
                (HostIa32Pat, "Host IA32_PAT", 0x2c00),
                (HostIa32Efer, "Host IA32_EFER", 0x2c02),
                (HostIa32PerfGlobalCtrl, "Host IA32_PERF_GLOBAL_CTRL", 0x2c04),
                (HostIa32Pkrs, "Host IA32_PKRS", 0x2c06),
                (HostIa32FredConfig, "Host IA32_FRED_CONFIG", 0x2c08),
                (HostIa32FredRsp1, "Host IA32_FRED_RSP1", 0x2c0a),
                (HostIa32FredRsp2, "Host IA32_FRED_RSP2", 0x2c0c),
                (HostIa32FredRsp3, "Host IA32_FRED_RSP3", 0x2c0e),
                (HostIa32FredStklvls, "Host IA32_FRED_STKLVLS", 0x2c10),
                (HostIa32FredSsp1, "Host IA32_FRED_SSP1", 0x2c12),
                (HostIa32FredSsp2, "Host IA32_FRED_SSP2", 0x2c14),
                (HostIa32FredSsp3, "Host IA32_FRED_SSP3", 0x2c16),
            ],
        ),
        (
            "B-8",
            Bits32,
            Control,
            &[
                (PinBasedControls, "Pin-based VM-execution controls", 0x4000),
                (
                    PrimaryProcBasedControls,
                    "Primary processor-based VM-execution controls",
                    0x4002,
                ),
                (ExceptionBitmap, "Exception bitmap", 0x4004),
                (PageFaultErrorCodeMask, "Page-fault error-code mask", 0x4006),
                (
                    PageFaultErrorCodeMatch,
                    "Page-fault error-code match",
                    0x4008,
                ),
                (Cr3TargetCount, "CR3-target count", 0x400a),
                (PrimaryVmExitControls, "Primary VM-exit controls", 0x400c),
                (VmExitMsrStoreCount, "VM-exit MSR-store count", 0x400e),
                (VmExitMsrLoadCount, "VM-exit MSR-load count", 0x4010),
                (VmEntryControls, "VM-entry controls", 0x4012),
                (VmEntryMsrLoadCount, "VM-entry MSR-load count", 0x4014),
                (
                    VmEntryInterruptionInfo,
                    "VM-entry interruption-information field",
                    0x4016,
                ),
                (
                    VmEntryExceptionErrorCode,
                    "VM-entry exception error code",
                    0x4018,
                ),
                (
                    VmEntryInstructionLength,
                    "VM-entry instruction length",
                    0x401a,
                ),
                (TprThreshold, "TPR threshold", 0x401c),
                (
                    SecondaryProcBasedControls,
                    "Secondary processor-based VM-execution controls",
                    0x401e,
                ),
                (PleGap, "PLE_Gap", 0x4020),
                (PleWindow, "PLE_Window", 0x4022),
                (
                    InstructionTimeoutControl,
                    "Instruction-timeout control",
                    0x4024,
                ),
                (SeamGuestKeyId, "SEAM-guest KeyID", 0x4026),
            ],
        ),
        (
            "B-9",
            Bits32,
            ExitInformation,
            &[
                (VmInstructionError, "VM-instruction error", 0x4400),
                (ExitReason, "Exit reason", 0x4402),
                (
                    VmExitInterruptionInfo,
                    "VM-exit interruption information",
                    0x4404,
                ),
                (
                    VmExitInterruptionErrorCode,
                    "VM-exit interruption error code",
                    0x4406,
                ),
                (IdtVectoringInfo, "IDT-vectoring information field", 0x4408),
                (IdtVectoringErrorCode, "IDT-vectoring error code", 0x440a),
                (
                    VmExitInstructionLength,
                    "VM-exit instruction length",
                    0x440c,
                ),
                (
                    VmExitInstructionInfo,
                    "VM-exit instruction information",
                    0x440e,
                ),
            ],
        ),
        (
            "B-10",
            Bits32,
            GuestState,
            &[
                (GuestEsLimit, "Guest ES limit", 0x4800),
                (GuestCsLimit, "Guest CS limit", 0x4802),
                (GuestSsLimit, "Guest SS limit", 0x4804),
                (GuestDsLimit, "Guest DS limit", 0x4806),
                (GuestFsLimit, "Guest FS limit", 0x4808),
                (GuestGsLimit, "Guest GS limit", 0x480a),
                (GuestLdtrLimit, "Guest LDTR limit", 0x480c),
                (GuestTrLimit, "Guest TR limit", 0x480e),
                (GuestGdtrLimit, "Guest GDTR limit", 0x4810),
                (GuestIdtrLimit, "Guest IDTR limit", 0x4812),
                (GuestEsAccessRights, "Guest ES access rights", 0x4814),
                (GuestCsAccessRights, "Guest CS access rights", 0x4816),
                (GuestSsAccessRights, "Guest SS access rights", 0x4818),
                (GuestDsAccessRights, "Guest DS access rights", 0x481a),
                (GuestFsAccessRights, "Guest FS access rights", 0x481c),
                (GuestGsAccessRights, "Guest GS access rights", 0x481e),
                (GuestLdtrAccessRights, "Guest LDTR access rights", 0x4820),
                (GuestTrAccessRights, "Guest TR access rights", 0x4822),
                (
                    GuestInterruptibilityState,
                    "Guest interruptibility state",
                    0x4824,
                ),
                (GuestActivityState, "Guest activity state", 0x4826),
                (GuestSmbase, "Guest SMBASE", 0x4828),
                (GuestIa32SysenterCs, "Guest IA32_SYSENTER_CS", 0x482a),
                (
                    VmxPreemptionTimerValue,
                    "VMX-preemption timer value",
                    0x482e,
                ),
            ],
        ),
        (
            "B-11",
            Bits32,
            HostState,
            &[(HostIa32SysenterCs, "Host IA32_SYSENTER_CS", 0x4c00)],
        ),
        (
            "B-12",
            Natural,
            Control,
            &[
                (Cr0GuestHostMask, "CR0 guest/host mask", 0x6000),
                (Cr4GuestHostMask, "CR4 guest/host mask", 0x6002),
                (Cr0ReadShadow, "CR0 read shadow", 0x6004),
                (Cr4ReadShadow, "CR4 read shadow", 0x6006),
                (Cr3TargetValue0, "CR3-target value 0", 0x6008),
                (Cr3TargetValue1, "CR3-target value 1", 0x600a),
                (Cr3TargetValue2, "CR3-target value 2", 0x600c),
                (Cr3TargetValue3, "CR3-target value 3", 0x600e),
            ],
        ),
        (
            "B-13",
            Natural,
            ExitInformation,
            &[
                (ExitQualification, "Exit qualification", 0x6400),
                (IoRcx, "I/O RCX", 0x6402),
                (IoRsi, "I/O RSI", 0x6404),
                (IoRdi, "I/O RDI", 0x6406),
                (IoRip, "I/O RIP", 0x6408),
                (GuestLinearAddress, "Guest-linear address", 0x640a),
            ],
        ),
        (
            "B-14",
            Natural,
            GuestState,
            &[
                (GuestCr0, "Guest CR0", 0x6800),
                (GuestCr3, "Guest CR3", 0x6802),
                (GuestCr4, "Guest CR4", 0x6804),
                (GuestEsBase, "Guest ES base", 0x6806),
                (GuestCsBase, "Guest CS base", 0x6808),
                (GuestSsBase, "Guest SS base", 0x680a),
                (GuestDsBase, "Guest DS base", 0x680c),
                (GuestFsBase, "Guest FS base", 0x680e),
                (GuestGsBase, "Guest GS base", 0x6810),
                (GuestLdtrBase, "Guest LDTR base", 0x6812),
                (GuestTrBase, "Guest TR base", 0x6814),
                (GuestGdtrBase, "Guest GDTR base", 0x6816),
                (GuestIdtrBase, "Guest IDTR base", 0x6818),
                (GuestDr7, "Guest DR7", 0x681a),
                (GuestRsp, "Guest RSP", 0x681c),
                (GuestRip, "Guest RIP", 0x681e),
                (GuestRflags, "Guest RFLAGS", 0x6820),
                (
                    GuestPendingDebugExceptions,
                    "Guest pending debug exceptions",
                    0x6822,
                ),
                (GuestIa32SysenterEsp, "Guest IA32_SYSENTER_ESP", 0x6824),
                (GuestIa32SysenterEip, "Guest IA32_SYSENTER_EIP", 0x6826),
                (GuestIa32SCet, "Guest IA32_S_CET", 0x6828),
                (GuestSsp, "Guest SSP", 0x682a),
                (
                    GuestIa32InterruptSspTableAddr,
                    "Guest IA32_INTERRUPT_SSP_TABLE_ADDR",
                    0x682c,
                ),
            ],
        ),
        (
            "B-15",
            Natural,
            HostState,
            &[
                (HostCr0, "Host CR0", 0x6c00),
                (HostCr3, "Host CR3", 0x6c02),
                (HostCr4, "Host CR4", 0x6c04),
                (HostFsBase, "Host FS base", 0x6c06),
                (HostGsBase, "Host GS base", 0x6c08),
                (HostTrBase, "Host TR base", 0x6c0a),
                (HostGdtrBase, "Host GDTR base", 0x6c0c),
                (HostIdtrBase, "Host IDTR base", 0x6c0e),
                (HostIa32SysenterEsp, "Host IA32_SYSENTER_ESP", 0x6c10),
                (HostIa32SysenterEip, "Host IA32_SYSENTER_EIP", 0x6c12),
                (HostRsp, "Host RSP", 0x6c14),
                (HostRip, "Host RIP", 0x6c16),
                (HostIa32SCet, "Host IA32_S_CET", 0x6c18),
                (HostSsp, "Host SSP", 0x6c1a),
                (
                    HostIa32InterruptSspTableAddr,
                    "Host IA32_INTERRUPT_SSP_TABLE_ADDR",
                    0x6c1c,
                ),
            ],
        ),
    ];

    #[test]
    fn appendix_b_tables_match_the_derived_shape() {
        let mut count = 0;
        for &(table, width, kind, rows) in APPENDIX_B {
            for &(field, name, encoding) in rows {
                assert_eq!(field.encoding(), encoding, "{table}: {name}");
                assert_eq!(field.name(), name, "{table}: {encoding:#x}");
                assert_eq!(field.width(), width, "{table}: {name}");
                assert_eq!(field.kind(), kind, "{table}: {name}");
                assert_eq!(
                    u32::from(field.index()),
                    (encoding >> 1) & 0x1ff,
                    "{table}: {name}"
                );
                count += 1;
            }
        }
        assert_eq!(count, VmcsField::ALL.len());
    }

    #[test]
    fn full_encodings_round_trip() {
        for &field in VmcsField::ALL {
            let decoded = VmcsField::from_encoding(field.encoding()).unwrap();
            assert_eq!(
                decoded,
                VmcsEncoding {
                    field,
                    access: VmcsAccess::Full
                }
            );
            assert_eq!(decoded.encoding(), field.encoding());
            match field.high_encoding() {
                Some(high) => {
                    assert_eq!(field.width(), Bits64);
                    let decoded = VmcsField::from_encoding(high).unwrap();
                    assert_eq!(
                        decoded,
                        VmcsEncoding {
                            field,
                            access: VmcsAccess::High
                        }
                    );
                    assert_eq!(decoded.encoding(), high);
                }
                None => {
                    assert_ne!(field.width(), Bits64);
                    assert_eq!(VmcsField::from_encoding(field.encoding() | 1), None);
                }
            }
        }
    }

    #[test]
    fn encodings_are_unique_and_sorted() {
        for pair in VmcsField::ALL.windows(2) {
            assert!(
                pair[0].encoding() < pair[1].encoding(),
                "{:?} {:?}",
                pair[0],
                pair[1]
            );
        }
        for &field in VmcsField::ALL {
            assert_eq!(
                field.encoding() & (ENCODING_RESERVED_BITS | 1),
                0,
                "{field:?}"
            );
        }
    }

    #[test]
    fn every_16_bit_encoding_decodes_or_is_rejected() {
        let mut decoded = 0;
        for raw in 0..=0xffff_u32 {
            if let Some(enc) = VmcsField::from_encoding(raw) {
                assert_eq!(enc.encoding(), raw);
                assert_eq!(raw & ENCODING_RESERVED_BITS, 0);
                decoded += 1;
            }
        }
        let highs = VmcsField::ALL
            .iter()
            .filter(|f| f.width() == Bits64)
            .count();
        assert_eq!(decoded, VmcsField::ALL.len() + highs);
    }

    #[test]
    fn reserved_bits_are_rejected() {
        // Guest ES selector with bit 12, bit 15 and bit 31 set.
        assert_eq!(VmcsField::from_encoding(0x1800), None);
        assert_eq!(VmcsField::from_encoding(0x8800), None);
        assert_eq!(VmcsField::from_encoding(0x8000_0800), None);
        // Index 22 of the 32-bit guest-state fields is unused (0x482c).
        assert_eq!(VmcsField::from_encoding(0x482c), None);
    }

    #[test]
    fn read_only_fields_have_no_write_path_unless_misc_allows() {
        for &field in VmcsField::ALL {
            let strict = field.writable(VmwriteScope::ExceptExitInformation);
            assert_eq!(
                strict.is_none(),
                field.kind() == ExitInformation,
                "{field:?}"
            );
            let any = field.writable(VmwriteScope::AnyField).unwrap();
            assert_eq!(any.field(), field);
        }
        let exit_qual = VmcsField::from_encoding(0x6400).unwrap();
        assert_eq!(
            exit_qual.writable(VmwriteScope::ExceptExitInformation),
            None
        );
    }

    #[test]
    fn read_and_merge_honour_width_and_access() {
        let scope = VmwriteScope::ExceptExitInformation;
        let sel = VmcsField::from_encoding(0x0800).unwrap();
        assert_eq!(sel.read(0x1234_5678), 0x5678);
        let w = sel.writable(scope).unwrap();
        assert_eq!(w.merge(0, 0xdead_beef), 0xbeef);

        let tsc_hi = VmcsField::from_encoding(0x2011).unwrap();
        assert_eq!(tsc_hi.read(0x1111_2222_3333_4444), 0x1111_2222);
        let w = tsc_hi.writable(scope).unwrap();
        assert_eq!(
            w.merge(0x1111_2222_3333_4444, 0xffff_ffff_aaaa_bbbb),
            0xaaaa_bbbb_3333_4444
        );

        let rip = VmcsField::from_encoding(0x681e)
            .unwrap()
            .writable(scope)
            .unwrap();
        assert_eq!(rip.merge(0, u64::MAX), u64::MAX);
        let limit = VmcsField::from_encoding(0x4800)
            .unwrap()
            .writable(scope)
            .unwrap();
        assert_eq!(limit.merge(0, u64::MAX), 0xffff_ffff);
    }

    #[test]
    fn base_fields_need_no_capability() {
        // A processor with no optional VMX feature still has every field of these kinds.
        let base: &[VmcsField] = &[
            GuestEsSelector,
            IoBitmapA,
            TscOffset,
            VmcsLinkPointer,
            GuestIa32Debugctl,
            PinBasedControls,
            ExitReason,
            ExitQualification,
            GuestRip,
            HostRip,
            Cr3TargetValue3,
            GuestIa32SysenterCs,
            HostIa32SysenterCs,
        ];
        for field in base {
            assert!(field.requirements().is_empty(), "{field:?}");
        }
        // No exit-information field except the EPT, FRED and MSR-list ones depends on a feature.
        for &field in VmcsField::ALL {
            if field.kind() == ExitInformation {
                let optional = matches!(field, GuestPhysicalAddress | MsrData | OriginalEventData);
                assert_eq!(!field.requirements().is_empty(), optional, "{field:?}");
            }
        }
    }

    #[test]
    fn requirements_follow_appendix_b_footnotes() {
        use crate::vmx::controls::{entry, exit, secondary_proc};
        assert_eq!(
            EptPointer.requirements(),
            &[Capability::SecondaryProc(secondary_proc::ENABLE_EPT)]
        );
        assert_eq!(
            GuestIa32Efer.requirements(),
            &[
                Capability::Entry(entry::LOAD_IA32_EFER),
                Capability::Exit(exit::SAVE_IA32_EFER)
            ]
        );
        assert_eq!(
            HostIa32Efer.requirements(),
            &[Capability::Exit(exit::LOAD_IA32_EFER)]
        );
        // Every capability names exactly one control bit.
        for &field in VmcsField::ALL {
            for cap in field.requirements() {
                let bits = match *cap {
                    Capability::PinBased(b)
                    | Capability::PrimaryProc(b)
                    | Capability::SecondaryProc(b)
                    | Capability::Exit(b)
                    | Capability::Entry(b) => u64::from(b),
                    Capability::TertiaryProc(b)
                    | Capability::SecondaryExit(b)
                    | Capability::VmFunction(b) => b,
                    Capability::Fred | Capability::Seam => 1,
                };
                assert_eq!(bits.count_ones(), 1, "{field:?}");
            }
        }
    }

    #[test]
    fn highest_index_is_the_largest_bits_9_1() {
        assert_eq!(highest_index(VmcsField::ALL), 0x29); // Injected-event data, 0x2052.
        assert_eq!(highest_index(&[GuestRip, VmxPreemptionTimerValue]), 0x17);
        assert_eq!(highest_index(&[]), 0);
    }
}
