//! VM exits parsed once into typed values (DESIGN.md §5): the exit-information fields of the
//! VMCS (SDM Vol. 3C §25.9, §28.2) read in one place, so that handlers match on what happened
//! instead of decoding raw fields, and a guest-controlled value that makes no sense becomes
//! [`Exit::Unknown`] rather than a panic.

use x86::Gpa;
use x86::vmx::exit::{
    CrAccessQualification, EptViolationQualification, IoQualification, MovDrQualification,
};
use x86::vmx::{ExitReason, ExitReasonField, InterruptionInfo, InterruptionType, VmcsField as F};

use crate::vmx::{Vmx, VmxError};

/// An event in the VMX interruption-information format (§25.9.2, §25.9.3): an exception, an
/// NMI, an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The vector.
    pub vector: u8,
    /// Its type.
    pub kind: InterruptionType,
    /// The error code, for the events that push one.
    pub error_code: Option<u32>,
}

impl Event {
    /// The event of a valid interruption-information field and its error-code field.
    fn from_fields(info: u64, error_code: u64) -> Option<Self> {
        let info = InterruptionInfo(info as u32);
        (info.0 & InterruptionInfo::VALID != 0).then(|| Self {
            vector: info.vector(),
            kind: info.kind(),
            error_code: info.error_code_valid().then_some(error_code as u32),
        })
    }
}

/// What caused a VM exit, with the information the SDM records for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// An exception (exception bitmap) or an NMI (NMI exiting), reason 0; the qualification is
    /// the faulting address for #PF and the DR6 bits for #DB.
    ExceptionOrNmi {
        /// The event.
        event: Event,
        /// The exit qualification.
        qualification: u64,
    },
    /// An external interrupt (reason 1), with its vector when "acknowledge interrupt on exit"
    /// took it.
    ExternalInterrupt {
        /// The acknowledged vector.
        vector: Option<u8>,
    },
    /// A triple fault in the guest (reason 2).
    TripleFault,
    /// Interrupt-window exiting (reason 7).
    InterruptWindow,
    /// NMI-window exiting (reason 8).
    NmiWindow,
    /// CPUID (reason 10).
    Cpuid,
    /// HLT (reason 12).
    Hlt,
    /// INVD (reason 13).
    Invd,
    /// INVLPG of a linear address (reason 14).
    Invlpg {
        /// The address.
        linear: u64,
    },
    /// RDPMC (reason 15).
    Rdpmc,
    /// RDTSC (16) or RDTSCP (51).
    Rdtsc {
        /// RDTSCP.
        rdtscp: bool,
    },
    /// VMCALL (reason 18).
    Vmcall,
    /// Another VMX instruction (VMCLEAR … VMXON, INVEPT, INVVPID), with its instruction
    /// information and displacement: for a hypervisor that emulates VMX for its guest.
    VmxInstruction {
        /// Which instruction.
        reason: ExitReason,
        /// The VM-exit instruction-information field.
        info: u32,
        /// The exit qualification (the memory operand's displacement).
        qualification: u64,
    },
    /// MOV to or from a control register, CLTS or LMSW (reason 28).
    CrAccess(CrAccessQualification),
    /// MOV to or from a debug register (reason 29).
    MovDr(MovDrQualification),
    /// An I/O instruction (reason 30); INS/OUTS also give their memory operand's linear
    /// address.
    Io {
        /// The exit qualification (size, direction, string, REP, port).
        qualification: IoQualification,
        /// The guest-linear address of a string instruction's memory operand.
        linear: Option<u64>,
    },
    /// RDMSR (31) or WRMSR (32).
    Msr {
        /// WRMSR.
        write: bool,
    },
    /// A VM entry failed after it started loading guest state: reason 33 (invalid guest
    /// state) or 34 (MSR loading), with bit 31 set.
    EntryFailure {
        /// 33 or 34.
        reason: ExitReason,
        /// The exit qualification (for 34, the 1-based index of the MSR entry).
        qualification: u64,
    },
    /// MWAIT (36), MONITOR (39), PAUSE (40).
    Hint {
        /// Which.
        reason: ExitReason,
    },
    /// LGDT/LIDT/SGDT/SIDT (46) or LLDT/LTR/SLDT/STR (47).
    DescriptorTable {
        /// Which group.
        reason: ExitReason,
        /// The VM-exit instruction-information field.
        info: u32,
        /// The displacement of the memory operand.
        qualification: u64,
    },
    /// An EPT violation (reason 48).
    EptViolation {
        /// The guest-physical address.
        gpa: Gpa,
        /// The guest-linear address, when qualification bit 7 says it is valid.
        linear: Option<u64>,
        /// The exit qualification.
        qualification: EptViolationQualification,
    },
    /// An EPT misconfiguration (reason 49).
    EptMisconfiguration {
        /// The guest-physical address.
        gpa: Gpa,
    },
    /// The VMX-preemption timer expired (reason 52).
    PreemptionTimer,
    /// WBINVD (54), XSETBV (55), RDRAND (57), RDSEED (61), INVPCID (58).
    Instruction {
        /// Which.
        reason: ExitReason,
        /// The VM-exit instruction-information field.
        info: u32,
        /// The exit qualification (INVPCID: the memory operand's displacement).
        qualification: u64,
    },
    /// A reason this hypervisor never enables, or an exit-reason value the SDM does not define:
    /// the raw basic reason and qualification, for a clear error.
    Unknown {
        /// The basic exit reason (bits 15:0).
        reason: u16,
        /// The exit qualification.
        qualification: u64,
    },
}

/// One VM exit: what caused it, and what every exit records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    /// The cause.
    pub exit: Exit,
    /// The VM-exit instruction length (valid for instruction exits, software events and
    /// exits during their delivery).
    pub instruction_length: u64,
    /// The event whose delivery the exit interrupted (IDT-vectoring information, §28.2.4):
    /// the hypervisor re-injects it.
    pub vectoring: Option<Event>,
    /// The guest RIP at the exit.
    pub guest_rip: u64,
}

impl ExitInfo {
    /// Reads the exit-information fields of the current VMCS.
    pub fn read<V: Vmx + ?Sized>(vmx: &mut V) -> Result<Self, VmxError> {
        let raw = ExitReasonField(vmx.vmread(F::ExitReason)? as u32);
        let q = vmx.vmread(F::ExitQualification)?;
        let instruction_length = vmx.vmread(F::VmExitInstructionLength)?;
        let vectoring = Event::from_fields(
            vmx.vmread(F::IdtVectoringInfo)?,
            vmx.vmread(F::IdtVectoringErrorCode)?,
        );
        let guest_rip = vmx.vmread(F::GuestRip)?;
        let unknown = Exit::Unknown {
            reason: raw.basic(),
            qualification: q,
        };
        let exit = match raw.reason() {
            None => unknown,
            Some(reason) if raw.entry_failure() => Exit::EntryFailure {
                reason,
                qualification: q,
            },
            Some(reason) => Self::parse(vmx, reason, q)?.unwrap_or(unknown),
        };
        Ok(Self {
            exit,
            instruction_length,
            vectoring,
            guest_rip,
        })
    }

    /// The exit of `reason` with qualification `q`, reading the fields it needs; `None` for
    /// a reason with no typed form here.
    fn parse<V: Vmx + ?Sized>(
        vmx: &mut V,
        reason: ExitReason,
        q: u64,
    ) -> Result<Option<Exit>, VmxError> {
        use ExitReason as R;
        let info = |vmx: &mut V| vmx.vmread(F::VmExitInstructionInfo).map(|v| v as u32);
        Ok(Some(match reason {
            R::ExceptionOrNmi => {
                let event = Event::from_fields(
                    vmx.vmread(F::VmExitInterruptionInfo)?,
                    vmx.vmread(F::VmExitInterruptionErrorCode)?,
                );
                match event {
                    Some(event) => Exit::ExceptionOrNmi {
                        event,
                        qualification: q,
                    },
                    None => return Ok(None),
                }
            }
            R::ExternalInterrupt => Exit::ExternalInterrupt {
                vector: Event::from_fields(vmx.vmread(F::VmExitInterruptionInfo)?, 0)
                    .map(|e| e.vector),
            },
            R::TripleFault => Exit::TripleFault,
            R::InterruptWindow => Exit::InterruptWindow,
            R::NmiWindow => Exit::NmiWindow,
            R::Cpuid => Exit::Cpuid,
            R::Hlt => Exit::Hlt,
            R::Invd => Exit::Invd,
            R::Invlpg => Exit::Invlpg { linear: q },
            R::Rdpmc => Exit::Rdpmc,
            R::Rdtsc => Exit::Rdtsc { rdtscp: false },
            R::Rdtscp => Exit::Rdtsc { rdtscp: true },
            R::Vmcall => Exit::Vmcall,
            R::Vmclear
            | R::Vmlaunch
            | R::Vmptrld
            | R::Vmptrst
            | R::Vmread
            | R::Vmresume
            | R::Vmwrite
            | R::Vmxoff
            | R::Vmxon
            | R::Invept
            | R::Invvpid => Exit::VmxInstruction {
                reason,
                info: info(vmx)?,
                qualification: q,
            },
            R::CrAccess => Exit::CrAccess(CrAccessQualification(q)),
            R::MovDr => Exit::MovDr(MovDrQualification(q)),
            R::IoInstruction => {
                let qualification = IoQualification(q);
                let linear = if qualification.is_string() {
                    Some(vmx.vmread(F::GuestLinearAddress)?)
                } else {
                    None
                };
                Exit::Io {
                    qualification,
                    linear,
                }
            }
            R::Rdmsr => Exit::Msr { write: false },
            R::Wrmsr => Exit::Msr { write: true },
            R::Mwait | R::Monitor | R::Pause => Exit::Hint { reason },
            R::GdtrIdtrAccess | R::LdtrTrAccess => Exit::DescriptorTable {
                reason,
                info: info(vmx)?,
                qualification: q,
            },
            R::EptViolation => {
                let qualification = EptViolationQualification(q);
                let linear =
                    if qualification.contains(EptViolationQualification::LINEAR_ADDRESS_VALID) {
                        Some(vmx.vmread(F::GuestLinearAddress)?)
                    } else {
                        None
                    };
                Exit::EptViolation {
                    gpa: Gpa::new(vmx.vmread(F::GuestPhysicalAddress)?),
                    linear,
                    qualification,
                }
            }
            R::EptMisconfiguration => Exit::EptMisconfiguration {
                gpa: Gpa::new(vmx.vmread(F::GuestPhysicalAddress)?),
            },
            R::PreemptionTimer => Exit::PreemptionTimer,
            R::Wbinvd | R::Xsetbv | R::Rdrand | R::Rdseed | R::Invpcid => Exit::Instruction {
                reason,
                info: info(vmx)?,
                qualification: q,
            },
            _ => return Ok(None),
        }))
    }
}
