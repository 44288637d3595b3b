//! VM-instruction error numbers (SDM Vol. 3C §31.4, "VM Instruction Error Numbers", Table 31-1).
//!
//! When a VMX instruction ends in VMfailValid, the processor stores one of these numbers in the
//! VM-instruction error field of the current VMCS ([`crate::vmx::VmcsField::VmInstructionError`]).
//! Numbers 14, 21 and 27 are not assigned. Section numbers are those of the 2023–2024 SDM
//! editions (chapter 31, "VMX Instruction Reference"); older editions number it 30.4.

/// A VM-instruction error number, with the SDM's description as [`VmInstructionError::description`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum VmInstructionError {
    /// VMCALL executed in VMX root operation.
    VmcallInVmxRoot = 1,
    /// VMCLEAR with invalid physical address.
    VmclearInvalidAddress = 2,
    /// VMCLEAR with VMXON pointer.
    VmclearVmxonPointer = 3,
    /// VMLAUNCH with non-clear VMCS.
    VmlaunchNonClearVmcs = 4,
    /// VMRESUME with non-launched VMCS.
    VmresumeNonLaunchedVmcs = 5,
    /// VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME).
    VmresumeAfterVmxoff = 6,
    /// VM entry with invalid control field(s).
    EntryInvalidControlFields = 7,
    /// VM entry with invalid host-state field(s).
    EntryInvalidHostStateFields = 8,
    /// VMPTRLD with invalid physical address.
    VmptrldInvalidAddress = 9,
    /// VMPTRLD with VMXON pointer.
    VmptrldVmxonPointer = 10,
    /// VMPTRLD with incorrect VMCS revision identifier.
    VmptrldIncorrectRevision = 11,
    /// VMREAD/VMWRITE from/to unsupported VMCS component.
    UnsupportedVmcsComponent = 12,
    /// VMWRITE to read-only VMCS component.
    VmwriteReadOnlyComponent = 13,
    /// VMXON executed in VMX root operation.
    VmxonInVmxRoot = 15,
    /// VM entry with invalid executive-VMCS pointer.
    EntryInvalidExecutiveVmcsPointer = 16,
    /// VM entry with non-launched executive VMCS.
    EntryNonLaunchedExecutiveVmcs = 17,
    /// VM entry with executive-VMCS pointer not VMXON pointer (when attempting to deactivate the
    /// dual-monitor treatment of SMIs and SMM).
    EntryExecutiveVmcsPointerNotVmxon = 18,
    /// VMCALL with non-clear VMCS (when attempting to activate the dual-monitor treatment of
    /// SMIs and SMM).
    VmcallNonClearVmcs = 19,
    /// VMCALL with invalid VM-exit control fields.
    VmcallInvalidExitControls = 20,
    /// VMCALL with incorrect MSEG revision identifier (when attempting to activate the
    /// dual-monitor treatment of SMIs and SMM).
    VmcallIncorrectMsegRevision = 22,
    /// VMXOFF under dual-monitor treatment of SMIs and SMM.
    VmxoffUnderDualMonitor = 23,
    /// VMCALL with invalid SMM-monitor features (when attempting to activate the dual-monitor
    /// treatment of SMIs and SMM).
    VmcallInvalidSmmMonitorFeatures = 24,
    /// VM entry with invalid VM-execution control fields in executive VMCS (when attempting to
    /// return from SMM).
    EntryInvalidExecutiveControls = 25,
    /// VM entry with events blocked by MOV SS.
    EntryEventsBlockedByMovSs = 26,
    /// Invalid operand to INVEPT/INVVPID.
    InvalidInveptInvvpidOperand = 28,
}

impl VmInstructionError {
    /// Every error number, in numeric order.
    pub const ALL: [VmInstructionError; 25] = [
        Self::VmcallInVmxRoot,
        Self::VmclearInvalidAddress,
        Self::VmclearVmxonPointer,
        Self::VmlaunchNonClearVmcs,
        Self::VmresumeNonLaunchedVmcs,
        Self::VmresumeAfterVmxoff,
        Self::EntryInvalidControlFields,
        Self::EntryInvalidHostStateFields,
        Self::VmptrldInvalidAddress,
        Self::VmptrldVmxonPointer,
        Self::VmptrldIncorrectRevision,
        Self::UnsupportedVmcsComponent,
        Self::VmwriteReadOnlyComponent,
        Self::VmxonInVmxRoot,
        Self::EntryInvalidExecutiveVmcsPointer,
        Self::EntryNonLaunchedExecutiveVmcs,
        Self::EntryExecutiveVmcsPointerNotVmxon,
        Self::VmcallNonClearVmcs,
        Self::VmcallInvalidExitControls,
        Self::VmcallIncorrectMsegRevision,
        Self::VmxoffUnderDualMonitor,
        Self::VmcallInvalidSmmMonitorFeatures,
        Self::EntryInvalidExecutiveControls,
        Self::EntryEventsBlockedByMovSs,
        Self::InvalidInveptInvvpidOperand,
    ];

    /// The error number stored in the VM-instruction error field.
    pub const fn number(self) -> u32 {
        self as u32
    }

    /// The error with number `number`, or `None` for 0 and for unassigned numbers.
    pub const fn from_number(number: u32) -> Option<Self> {
        Some(match number {
            1 => Self::VmcallInVmxRoot,
            2 => Self::VmclearInvalidAddress,
            3 => Self::VmclearVmxonPointer,
            4 => Self::VmlaunchNonClearVmcs,
            5 => Self::VmresumeNonLaunchedVmcs,
            6 => Self::VmresumeAfterVmxoff,
            7 => Self::EntryInvalidControlFields,
            8 => Self::EntryInvalidHostStateFields,
            9 => Self::VmptrldInvalidAddress,
            10 => Self::VmptrldVmxonPointer,
            11 => Self::VmptrldIncorrectRevision,
            12 => Self::UnsupportedVmcsComponent,
            13 => Self::VmwriteReadOnlyComponent,
            15 => Self::VmxonInVmxRoot,
            16 => Self::EntryInvalidExecutiveVmcsPointer,
            17 => Self::EntryNonLaunchedExecutiveVmcs,
            18 => Self::EntryExecutiveVmcsPointerNotVmxon,
            19 => Self::VmcallNonClearVmcs,
            20 => Self::VmcallInvalidExitControls,
            22 => Self::VmcallIncorrectMsegRevision,
            23 => Self::VmxoffUnderDualMonitor,
            24 => Self::VmcallInvalidSmmMonitorFeatures,
            25 => Self::EntryInvalidExecutiveControls,
            26 => Self::EntryEventsBlockedByMovSs,
            28 => Self::InvalidInveptInvvpidOperand,
            _ => return None,
        })
    }

    /// The SDM's description of the error (Table 31-1).
    pub const fn description(self) -> &'static str {
        match self {
            Self::VmcallInVmxRoot => "VMCALL executed in VMX root operation",
            Self::VmclearInvalidAddress => "VMCLEAR with invalid physical address",
            Self::VmclearVmxonPointer => "VMCLEAR with VMXON pointer",
            Self::VmlaunchNonClearVmcs => "VMLAUNCH with non-clear VMCS",
            Self::VmresumeNonLaunchedVmcs => "VMRESUME with non-launched VMCS",
            Self::VmresumeAfterVmxoff => {
                "VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME)"
            }
            Self::EntryInvalidControlFields => "VM entry with invalid control field(s)",
            Self::EntryInvalidHostStateFields => "VM entry with invalid host-state field(s)",
            Self::VmptrldInvalidAddress => "VMPTRLD with invalid physical address",
            Self::VmptrldVmxonPointer => "VMPTRLD with VMXON pointer",
            Self::VmptrldIncorrectRevision => "VMPTRLD with incorrect VMCS revision identifier",
            Self::UnsupportedVmcsComponent => "VMREAD/VMWRITE from/to unsupported VMCS component",
            Self::VmwriteReadOnlyComponent => "VMWRITE to read-only VMCS component",
            Self::VmxonInVmxRoot => "VMXON executed in VMX root operation",
            Self::EntryInvalidExecutiveVmcsPointer => {
                "VM entry with invalid executive-VMCS pointer"
            }
            Self::EntryNonLaunchedExecutiveVmcs => "VM entry with non-launched executive VMCS",
            Self::EntryExecutiveVmcsPointerNotVmxon => {
                "VM entry with executive-VMCS pointer not VMXON pointer (when attempting to \
                 deactivate the dual-monitor treatment of SMIs and SMM)"
            }
            Self::VmcallNonClearVmcs => {
                "VMCALL with non-clear VMCS (when attempting to activate the dual-monitor \
                 treatment of SMIs and SMM)"
            }
            Self::VmcallInvalidExitControls => "VMCALL with invalid VM-exit control fields",
            Self::VmcallIncorrectMsegRevision => {
                "VMCALL with incorrect MSEG revision identifier (when attempting to activate the \
                 dual-monitor treatment of SMIs and SMM)"
            }
            Self::VmxoffUnderDualMonitor => "VMXOFF under dual-monitor treatment of SMIs and SMM",
            Self::VmcallInvalidSmmMonitorFeatures => {
                "VMCALL with invalid SMM-monitor features (when attempting to activate the \
                 dual-monitor treatment of SMIs and SMM)"
            }
            Self::EntryInvalidExecutiveControls => {
                "VM entry with invalid VM-execution control fields in executive VMCS (when \
                 attempting to return from SMM)"
            }
            Self::EntryEventsBlockedByMovSs => "VM entry with events blocked by MOV SS",
            Self::InvalidInveptInvvpidOperand => "Invalid operand to INVEPT/INVVPID",
        }
    }
}

impl core::fmt::Display for VmInstructionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "VM-instruction error {}: {}",
            self.number(),
            self.description()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_gaps_are_rejected() {
        let mut seen = 0;
        for n in 0..64 {
            match VmInstructionError::from_number(n) {
                Some(e) => {
                    assert_eq!(e.number(), n);
                    assert_eq!(VmInstructionError::ALL[seen], e);
                    seen += 1;
                }
                None => assert!(matches!(n, 0 | 14 | 21 | 27 | 29..), "{n}"),
            }
        }
        assert_eq!(seen, VmInstructionError::ALL.len());
        assert_eq!(VmInstructionError::from_number(u32::MAX), None);
    }

    #[test]
    fn descriptions_match_table_31_1() {
        let table = [
            (1, "VMCALL executed in VMX root operation"),
            (7, "VM entry with invalid control field(s)"),
            (8, "VM entry with invalid host-state field(s)"),
            (12, "VMREAD/VMWRITE from/to unsupported VMCS component"),
            (13, "VMWRITE to read-only VMCS component"),
            (26, "VM entry with events blocked by MOV SS"),
            (28, "Invalid operand to INVEPT/INVVPID"),
        ];
        for (n, text) in table {
            assert_eq!(
                VmInstructionError::from_number(n).unwrap().description(),
                text
            );
        }
    }
}
