//! A [`Vmx`] backend for unit tests (DESIGN.md §5): VMCS regions as field maps, VM entries
//! that replay a scripted sequence of exits (each a set of exit-information fields), and a
//! log of every operation, so a test can drive the hypervisor through exact exit sequences and
//! check what it wrote. VMREAD/VMWRITE apply the SDM's field rules that matter to a
//! hypervisor: unknown encodings and writes of read-only (exit-information) fields fail with
//! VMfailValid(12) and (13).
//!
//! Every exit depends on the script alone: a VM exit rewrites all the exit-information fields
//! (SDM Vol. 3C §28.2), so the mock clears them before it applies the scripted ones, and it
//! clears the valid bit of the VM-entry interruption-information field as every VM exit does
//! (§28.2, "VM exits clear the valid bit"). A scripted exit may also set the TSC at which
//! the guest exits: the time it ran. [`MockHost`] puts the mock together with a
//! [`VecMemory`] and a scripted [`Platform`] into one [`crate::platform::Host`].

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use x86::vmx::caps::{InveptType, InvvpidType};
use x86::vmx::{InterruptionInfo, VmInstructionError, VmcsField, VmcsFieldKind, VmwriteScope};
use x86::{Hfn, Hpa};

use crate::memory::{MemError, PhysMemory, VecMemory};
use crate::platform::Platform;
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
    /// The TSC when the guest exits (`None`: no time passes); the mock's TSC never goes back.
    pub tsc: Option<u64>,
}

impl From<Vec<(VmcsField, u64)>> for ScriptedExit {
    fn from(fields: Vec<(VmcsField, u64)>) -> Self {
        Self {
            fields,
            ..Self::default()
        }
    }
}

/// What one VM entry saw: the current VMCS and the guest's registers as the hypervisor left
/// them for VMLAUNCH/VMRESUME.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// The current VMCS's fields at the entry.
    pub vmcs: BTreeMap<VmcsField, u64>,
    /// The guest's general-purpose registers at the entry.
    pub regs: GuestRegs,
    /// The TSC at the entry.
    pub tsc: u64,
}

impl Entry {
    /// The value of `field` at the entry (0 if never written).
    pub fn field(&self, field: VmcsField) -> u64 {
        self.vmcs.get(&field).copied().unwrap_or(0)
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
    /// Every VM entry that started (passed the launch-state checks), in order.
    pub entries: Vec<Entry>,
    /// The TSC (guest time: it advances as scripted exits say, or as the platform idles).
    pub tsc: u64,
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
        self.entries.push(Entry {
            vmcs: region.clone(),
            regs: *regs,
            tsc: self.tsc,
        });
        // The exit rewrites every exit-information field and clears the valid bit of the
        // VM-entry interruption information (§28.2): nothing of an earlier exit shows through.
        region.retain(|f, _| f.kind() != VmcsFieldKind::ExitInformation);
        if let Some(info) = region.get_mut(&VmcsField::VmEntryInterruptionInfo) {
            *info &= !u64::from(InterruptionInfo::VALID);
        }
        if let Some(tsc) = exit.tsc {
            self.tsc = self.tsc.max(tsc);
        }
        for (field, value) in exit.fields {
            region.insert(field, value);
        }
        for (r, value) in exit.regs {
            if let Some(slot) = regs.gpr.get_mut(r) {
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

/// A whole machine for unit tests of the hypervisor: [`MockVmx`], a [`VecMemory`] and a
/// scripted platform (a CPUID table, the mock's TSC, console capture, a fixed host state).
#[derive(Debug)]
pub struct MockHost {
    /// The VMX backend (and the TSC).
    pub vmx: MockVmx,
    /// Host-physical memory and the hypervisor's frames.
    pub mem: VecMemory,
    /// CPUID by leaf and sub-leaf; a leaf listed with sub-leaf 0 alone answers every sub-leaf
    /// (it has none), anything else not listed reads all zeros.
    pub cpuid: BTreeMap<(u32, u32), [u32; 4]>,
    /// Every byte the guest wrote to its console, in order.
    pub console: Vec<u8>,
    /// The host-state fields [`Platform::host_state`] returns.
    pub host_state: Vec<(VmcsField, u64)>,
    /// Every [`Platform::idle_until`] target, in order.
    pub idled: Vec<u64>,
}

impl MockHost {
    /// A host with `mem`, no capability MSRs, an empty CPUID table and no host state.
    pub fn new(mem: VecMemory) -> Self {
        Self {
            vmx: MockVmx::new(),
            mem,
            cpuid: BTreeMap::new(),
            console: Vec::new(),
            host_state: Vec::new(),
            idled: Vec::new(),
        }
    }
}

impl Vmx for MockHost {
    fn vmclear(&mut self, vmcs: Hpa) -> Result<(), VmxError> {
        self.vmx.vmclear(vmcs)
    }
    fn vmptrld(&mut self, vmcs: Hpa) -> Result<(), VmxError> {
        self.vmx.vmptrld(vmcs)
    }
    fn vmread(&mut self, field: VmcsField) -> Result<u64, VmxError> {
        self.vmx.vmread(field)
    }
    fn vmwrite(&mut self, field: VmcsField, value: u64) -> Result<(), VmxError> {
        self.vmx.vmwrite(field, value)
    }
    fn run(&mut self, launch: bool, regs: &mut GuestRegs) -> Result<RunOutcome, VmxError> {
        self.vmx.run(launch, regs)
    }
    fn invept(&mut self, kind: InveptType, eptp: u64) -> Result<(), VmxError> {
        self.vmx.invept(kind, eptp)
    }
    fn invvpid(&mut self, kind: InvvpidType, vpid: u16, addr: u64) -> Result<(), VmxError> {
        self.vmx.invvpid(kind, vpid, addr)
    }
    fn capability(&mut self, msr: u32) -> Result<u64, VmxError> {
        self.vmx.capability(msr)
    }
}

impl PhysMemory for MockHost {
    fn read(&mut self, at: Hpa, buf: &mut [u8]) -> Result<(), MemError> {
        self.mem.read(at, buf)
    }
    fn write(&mut self, at: Hpa, data: &[u8]) -> Result<(), MemError> {
        self.mem.write(at, data)
    }
    fn alloc_frame(&mut self) -> Option<Hfn> {
        self.mem.alloc_frame()
    }
    fn free_frame(&mut self, frame: Hfn) {
        self.mem.free_frame(frame);
    }
}

impl Platform for MockHost {
    fn cpuid(&mut self, leaf: u32, sub: u32) -> [u32; 4] {
        if let Some(v) = self.cpuid.get(&(leaf, sub)) {
            return *v;
        }
        // A leaf listed with sub-leaf 0 alone has no sub-leaves: CPUID ignores ECX for it.
        let subleaves = self
            .cpuid
            .range((leaf, 1)..=(leaf, u32::MAX))
            .next()
            .is_some();
        match self.cpuid.get(&(leaf, 0)) {
            Some(v) if !subleaves => *v,
            _ => [0; 4],
        }
    }
    fn tsc(&self) -> u64 {
        self.vmx.tsc
    }
    fn idle_until(&mut self, tsc: u64) {
        self.idled.push(tsc);
        self.vmx.tsc = self.vmx.tsc.max(tsc);
    }
    fn console(&mut self, byte: u8) {
        self.console.push(byte);
    }
    fn host_state(&self) -> &[(VmcsField, u64)] {
        &self.host_state
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
            tsc: None,
        });
        assert_eq!(m.vmptrld(VMCS), Ok(()));
        let mut regs = GuestRegs::default();
        assert_eq!(m.run(true, &mut regs), Ok(RunOutcome::Exited));
        assert_eq!(regs.gpr[0], 0xaa, "the guest's registers come back");
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
    fn each_exit_is_the_script_alone() {
        let mut m = MockVmx::new();
        m.script.push_back(ScriptedExit {
            fields: vec![
                (F::ExitReason, ExitReason::EptViolation as u64),
                (F::IdtVectoringInfo, 0x8000_0b0e),
                (F::VmExitInstructionLength, 3),
            ],
            regs: vec![],
            tsc: Some(500),
        });
        m.script.push_back(ScriptedExit {
            fields: vec![(F::ExitReason, ExitReason::Cpuid as u64)],
            regs: vec![(15, 7)],
            tsc: Some(100),
        });
        let mut regs = GuestRegs::default();
        assert_eq!(m.vmptrld(VMCS), Ok(()));
        assert_eq!(m.vmwrite(F::GuestRip, 0x1000), Ok(()));
        assert_eq!(m.run(true, &mut regs), Ok(RunOutcome::Exited));
        assert_eq!(m.tsc, 500);
        // An injection at the next entry; the exit clears its valid bit (SDM §28.2).
        assert_eq!(m.vmwrite(F::VmEntryInterruptionInfo, 0x8000_0b0d), Ok(()));
        regs.gpr[1] = 0x11;
        assert_eq!(m.run(false, &mut regs), Ok(RunOutcome::Exited));
        assert_eq!(m.vmread(F::VmEntryInterruptionInfo), Ok(0x0000_0b0d));
        // Nothing of the first exit shows through the second.
        assert_eq!(m.vmread(F::IdtVectoringInfo), Ok(0));
        assert_eq!(m.vmread(F::VmExitInstructionLength), Ok(0));
        assert_eq!(m.vmread(F::ExitReason), Ok(10));
        // Guest state is kept; time does not go back.
        assert_eq!(m.vmread(F::GuestRip), Ok(0x1000));
        assert_eq!(m.tsc, 500);
        assert_eq!(regs.gpr[15], 7);
        // What each entry saw.
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.entries[0].field(F::VmEntryInterruptionInfo), 0);
        assert_eq!(m.entries[1].field(F::VmEntryInterruptionInfo), 0x8000_0b0d);
        assert_eq!((m.entries[1].regs.gpr[1], m.entries[1].tsc), (0x11, 500));
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
