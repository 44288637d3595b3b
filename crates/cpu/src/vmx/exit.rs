//! A VM exit as the part of the silicon that detects it describes it (SDM Vol. 3C §28.2,
//! "Recording VM-Exit Information and Updating VM-Entry Control Fields"): the reason and the
//! exit-information fields that depend on it. Whoever detects the exit (an instruction in
//! non-root operation, event delivery, the EPT walk, the preemption timer) returns one of these
//! as `Exc::VmExit`; the transition (`crate::nonroot`) writes it into the VMCS together with
//! what every exit records (instruction length, IDT-vectoring information) and loads host state.

use x86::vmx::ExitReason;

/// The VM-exit interruption information of an exit caused by an exception, an NMI or an
/// external interrupt (§28.2.2): the raw field and its error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInterruption {
    /// The VM-exit interruption-information field (valid bit set).
    pub info: u32,
    /// The VM-exit interruption error code, for events that have one.
    pub error_code: Option<u32>,
}

/// One VM exit, before it is recorded in the VMCS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmExit {
    /// The basic exit reason (bits 15:0 of the exit-reason field).
    pub reason: ExitReason,
    /// The exit qualification (§28.2.1), 0 for reasons that define none.
    pub qualification: u64,
    /// The guest-linear-address field, for the exits that save one (§28.2.1: EPT violations
    /// with a valid linear address, INS/OUTS, INVLPG, and the descriptor-table and VMX
    /// instruction exits).
    pub guest_linear: Option<u64>,
    /// The guest-physical-address field (EPT violations and misconfigurations).
    pub guest_physical: Option<u64>,
    /// The VM-exit instruction-information field (§28.2.5), for the instructions that have it.
    pub instruction_info: Option<u32>,
    /// The VM-exit interruption information (exception, NMI and external-interrupt exits).
    pub interruption: Option<ExitInterruption>,
}

impl VmExit {
    /// An exit with only a reason and a qualification.
    pub const fn new(reason: ExitReason, qualification: u64) -> Self {
        Self {
            reason,
            qualification,
            guest_linear: None,
            guest_physical: None,
            instruction_info: None,
            interruption: None,
        }
    }

    /// An EPT violation (§29.3.3.2) at guest-physical `gpa`, with the qualification the walk
    /// computed and the guest-linear address when qualification bit 7 says it is valid.
    pub const fn ept_violation(qualification: u64, gpa: u64, gla: Option<u64>) -> Self {
        Self {
            guest_physical: Some(gpa),
            guest_linear: gla,
            ..Self::new(ExitReason::EptViolation, qualification)
        }
    }

    /// An EPT misconfiguration (§29.3.3.1) at guest-physical `gpa`.
    pub const fn ept_misconfig(gpa: u64) -> Self {
        Self {
            guest_physical: Some(gpa),
            ..Self::new(ExitReason::EptMisconfiguration, 0)
        }
    }

    /// The same exit with the instruction-information field.
    pub const fn with_instruction_info(self, info: u32) -> Self {
        Self {
            instruction_info: Some(info),
            ..self
        }
    }

    /// The same exit with the guest-linear-address field.
    pub const fn with_guest_linear(self, gla: u64) -> Self {
        Self {
            guest_linear: Some(gla),
            ..self
        }
    }
}
