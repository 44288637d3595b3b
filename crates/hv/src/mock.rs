//! A [`Vmx`] backend for unit tests (DESIGN.md §5): VMCS regions as field maps, VM entries
//! that replay a scripted sequence of exits (each a set of exit-information fields), and a
//! log of every operation, so a test can drive the hypervisor through exact exit sequences and
//! check what it wrote. VMREAD/VMWRITE apply the SDM's field rules that matter to a
//! hypervisor: unknown encodings and writes of read-only (exit-information) fields fail with
//! VMfailValid(12) and (13).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use x86::Hpa;
use x86::vmx::caps::{InveptType, InvvpidType};
use x86::vmx::{VmInstructionError, VmcsField, VmwriteScope};

use crate::vmx::{GuestRegs, RunOutcome, VmFail, Vmx, VmxError};

/// One operation the hypervisor performed, as the mock saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// VMCLEAR.
    Vmclear(Hpa),
    /// VMPTRLD.
    Vmptrld(Hpa),
    /// VMWRITE.
    Vmwrite(VmcsField, u64),
    /// VMLAUNCH (`true`) or VMRESUME.
    Run(bool),
    /// INVEPT.
    Invept(InveptType, u64),
    /// INVVPID.
    Invvpid(InvvpidType, u16, u64),
}

/// One scripted VM exit: the fields the "processor" writes when the guest exits, and the
/// guest registers the guest left (by index).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScriptedExit {
    /// Exit-information and guest-state fields.
    pub fields: Vec<(VmcsField, u64)>,
    /// Guest general-purpose registers.
    pub regs: Vec<(usize, u64)>,
}

impl From<Vec<(VmcsField, u64)>> for ScriptedExit {
    fn from(fields: Vec<(VmcsField, u64)>) -> Self {
        Self {
            fields,
            regs: Vec::new(),
        }
    }
}

/// The mock.
#[derive(Debug, Default)]
pub struct MockVmx {
    regions: BTreeMap<u64, BTreeMap<VmcsField, u64>>,
    current: Option<u64>,
    launched: BTreeMap<u64, bool>,
    /// Exits the next runs produce, in order.
    pub script: VecDeque<ScriptedExit>,
    /// Every operation, in order (VMREADs are not logged).
    pub log: Vec<Op>,
    /// Capability MSR values by index.
    pub capabilities: BTreeMap<u32, u64>,
}

impl MockVmx {
    /// A mock with no VMCS.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `field` in the VMCS at `vmcs` (0 if never written).
    pub fn field(&self, vmcs: Hpa, field: VmcsField) -> u64 {
        self.regions
            .get(&vmcs.raw())
            .and_then(|r| r.get(&field))
            .copied()
            .unwrap_or(0)
    }

    fn current_mut(&mut self) -> Result<&mut BTreeMap<VmcsField, u64>, VmxError> {
        let at = self.current.ok_or(VmFail::Invalid)?;
        Ok(self.regions.entry(at).or_default())
    }
}

impl Vmx for MockVmx {
    fn vmclear(&mut self, vmcs: Hpa) -> Result<(), VmxError> {
        self.log.push(Op::Vmclear(vmcs));
        if vmcs.raw() & 0xfff != 0 {
            return Err(VmFail::Valid(VmInstructionError::VmclearInvalidAddress).into());
        }
        self.launched.insert(vmcs.raw(), false);
        if self.current == Some(vmcs.raw()) {
            self.current = None;
        }
        Ok(())
    }

    fn vmptrld(&mut self, vmcs: Hpa) -> Result<(), VmxError> {
        self.log.push(Op::Vmptrld(vmcs));
        if vmcs.raw() & 0xfff != 0 {
            return Err(VmFail::Valid(VmInstructionError::VmptrldInvalidAddress).into());
        }
        self.current = Some(vmcs.raw());
        Ok(())
    }

    fn vmread(&mut self, field: VmcsField) -> Result<u64, VmxError> {
        Ok(self.current_mut()?.get(&field).copied().unwrap_or(0))
    }

    fn vmwrite(&mut self, field: VmcsField, value: u64) -> Result<(), VmxError> {
        self.log.push(Op::Vmwrite(field, value));
        if field
            .writable(VmwriteScope::ExceptExitInformation)
            .is_none()
        {
            return Err(VmFail::Valid(VmInstructionError::VmwriteReadOnlyComponent).into());
        }
        self.current_mut()?.insert(field, value);
        Ok(())
    }

    fn run(&mut self, launch: bool, regs: &mut GuestRegs) -> Result<RunOutcome, VmxError> {
        self.log.push(Op::Run(launch));
        let at = self.current.ok_or(VmFail::Invalid)?;
        let launched = self.launched.get(&at).copied().unwrap_or(false);
        match (launch, launched) {
            (true, true) => {
                return Err(VmFail::Valid(VmInstructionError::VmlaunchNonClearVmcs).into());
            }
            (false, false) => {
                return Err(VmFail::Valid(VmInstructionError::VmresumeNonLaunchedVmcs).into());
            }
            _ => {}
        }
        let exit = self.script.pop_front().ok_or_else(|| {
            VmxError::Backend(alloc::string::String::from("mock: no scripted exit left"))
        })?;
        self.launched.insert(at, true);
        let region = self.regions.entry(at).or_default();
        for (field, value) in exit.fields {
            region.insert(field, value);
        }
        for (r, value) in exit.regs {
            if let Some(slot) = regs.0.get_mut(r) {
                *slot = value;
            }
        }
        Ok(RunOutcome::Exited)
    }

    fn invept(&mut self, kind: InveptType, eptp: u64) -> Result<(), VmxError> {
        self.log.push(Op::Invept(kind, eptp));
        Ok(())
    }

    fn invvpid(&mut self, kind: InvvpidType, vpid: u16, addr: u64) -> Result<(), VmxError> {
        self.log.push(Op::Invvpid(kind, vpid, addr));
        Ok(())
    }

    fn capability(&mut self, msr: u32) -> Result<u64, VmxError> {
        self.capabilities
            .get(&msr)
            .copied()
            .ok_or_else(|| VmxError::Backend(alloc::format!("mock: no capability MSR {msr:#x}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{Event, Exit, ExitInfo};
    use alloc::vec;
    use x86::vmx::exit::IoQualification;
    use x86::vmx::{ExitReason, InterruptionType, VmcsField as F};

    const VMCS: Hpa = Hpa::new(0x1000);

    fn launched_with(fields: Vec<(VmcsField, u64)>) -> MockVmx {
        let mut m = MockVmx::new();
        m.script.push_back(ScriptedExit {
            fields,
            regs: vec![(0, 0xaa)],
        });
        assert_eq!(m.vmptrld(VMCS), Ok(()));
        let mut regs = GuestRegs::default();
        assert_eq!(m.run(true, &mut regs), Ok(RunOutcome::Exited));
        assert_eq!(regs.0[0], 0xaa, "the guest's registers come back");
        m
    }

    #[test]
    fn launch_state_and_field_rules_follow_the_sdm() {
        let mut m = launched_with(vec![(F::ExitReason, 10)]);
        let mut regs = GuestRegs::default();
        assert_eq!(
            m.run(true, &mut regs),
            Err(VmFail::Valid(VmInstructionError::VmlaunchNonClearVmcs).into())
        );
        assert_eq!(
            m.vmwrite(F::ExitReason, 1),
            Err(VmFail::Valid(VmInstructionError::VmwriteReadOnlyComponent).into())
        );
        assert_eq!(m.vmclear(VMCS), Ok(()));
        assert_eq!(m.vmread(F::GuestRip), Err(VmFail::Invalid.into()));
        assert_eq!(m.vmptrld(VMCS), Ok(()));
        assert_eq!(
            m.run(false, &mut regs),
            Err(VmFail::Valid(VmInstructionError::VmresumeNonLaunchedVmcs).into())
        );
    }

    #[test]
    fn exits_are_parsed_once_into_typed_values() {
        let mut m = launched_with(vec![
            (F::ExitReason, ExitReason::IoInstruction as u64),
            // OUT DX, AL to 0x3F8: size 1, direction out, DX operand.
            (F::ExitQualification, 0x3f8 << 16),
            (F::VmExitInstructionLength, 1),
            (F::GuestRip, 0x1234),
        ]);
        let e = ExitInfo::read(&mut m).unwrap();
        assert_eq!(
            e.exit,
            Exit::Io {
                qualification: IoQualification(0x3f8 << 16),
                linear: None
            }
        );
        assert_eq!(
            (e.instruction_length, e.guest_rip, e.vectoring),
            (1, 0x1234, None)
        );
        // A #PF intercepted during the delivery of an external interrupt.
        let mut m = launched_with(vec![
            (F::ExitReason, 0),
            (F::VmExitInterruptionInfo, 0x8000_0b0e),
            (F::VmExitInterruptionErrorCode, 2),
            (F::ExitQualification, 0xdead_b000),
            (F::IdtVectoringInfo, 0x8000_0020),
        ]);
        let e = ExitInfo::read(&mut m).unwrap();
        assert_eq!(
            e.exit,
            Exit::ExceptionOrNmi {
                event: Event {
                    vector: 14,
                    kind: InterruptionType::HardwareException,
                    error_code: Some(2)
                },
                qualification: 0xdead_b000
            }
        );
        assert_eq!(
            e.vectoring,
            Some(Event {
                vector: 0x20,
                kind: InterruptionType::ExternalInterrupt,
                error_code: None
            })
        );
        // An entry failure, and a reason the SDM does not define.
        let mut m = launched_with(vec![
            (F::ExitReason, 0x8000_0022),
            (F::ExitQualification, 3),
        ]);
        assert_eq!(
            ExitInfo::read(&mut m).unwrap().exit,
            Exit::EntryFailure {
                reason: ExitReason::EntryFailureMsrLoading,
                qualification: 3
            }
        );
        let mut m = launched_with(vec![(F::ExitReason, 0x7fff)]);
        assert_eq!(
            ExitInfo::read(&mut m).unwrap().exit,
            Exit::Unknown {
                reason: 0x7fff,
                qualification: 0
            }
        );
    }
}
