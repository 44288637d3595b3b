//! The VMX backend the hypervisor runs on (DESIGN.md §5): the VMX instructions a hypervisor
//! executes, as a trait. Three implementations: the software CPU driven natively (L0 in
//! `crates/nestvisor`), real VMX instructions (the bare-metal guest-hv image), and
//! [`crate::mock::MockVmx`] for unit tests. Everything above this trait is the same code on
//! all three.
//!
//! The outcomes are the SDM's (Vol. 3C §31.2): VMsucceed, VMfailInvalid, VMfailValid with a
//! VM-instruction error number. A backend that cannot go on (a model error of the software
//! CPU, say) reports [`VmxError::Backend`], which the hypervisor passes up unchanged.

use core::fmt;

use x86::Hpa;
use x86::vmx::caps::{InveptType, InvvpidType};
use x86::vmx::{VmInstructionError, VmcsField};

/// How a VMX instruction failed (SDM Vol. 3C §31.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// VMfailInvalid: no current VMCS, or a pointer the processor refused outright.
    Invalid,
    /// VMfailValid with the VM-instruction error number.
    Valid(VmInstructionError),
}

impl fmt::Display for VmFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid => write!(f, "VMfailInvalid"),
            Self::Valid(e) => write!(f, "VMfailValid({}: {})", e.number(), e.description()),
        }
    }
}

/// An error of a backend operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmxError {
    /// The instruction failed architecturally.
    Fail(VmFail),
    /// The backend cannot go on (the software CPU met something it does not implement, say):
    /// the message names it.
    Backend(alloc::string::String),
}

impl From<VmFail> for VmxError {
    fn from(f: VmFail) -> Self {
        Self::Fail(f)
    }
}

impl fmt::Display for VmxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fail(fail) => write!(f, "{fail}"),
            Self::Backend(m) => write!(f, "{m}"),
        }
    }
}

/// How a VM entry and the guest run that follows it ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// A VM exit (or a VM-entry failure exit, reason 33/34 with bit 31): the exit information
    /// is in the current VMCS.
    Exited,
    /// The guest is still running and gave the processor back without an exit: the software
    /// CPU's slice ended, or the guest halted without HLT exiting (`halted`). Run again to go
    /// on; real VMX never returns this.
    Preempted {
        /// The guest is in the HLT state, waiting for an interrupt.
        halted: bool,
    },
}

/// The guest's registers that the VMCS does not hold, so the backend swaps them around every
/// VM entry and exit, as KVM's `__vmx_vcpu_run` does: the general-purpose registers other than
/// RSP, and CR2 (a page fault that causes a VM exit leaves CR2 alone, SDM Vol. 3C §27.1, so a
/// hypervisor that injects #PF itself sets the guest's CR2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestRegs {
    /// Indexed in the SDM's register order (RAX = 0 … R15 = 15; index 4, RSP, is unused).
    pub gpr: [u64; 16],
    /// CR2.
    pub cr2: u64,
}

/// The VMX instructions of root operation, on VMCS regions in host-physical memory.
pub trait Vmx {
    /// VMCLEAR of the VMCS region at `vmcs`.
    fn vmclear(&mut self, vmcs: Hpa) -> Result<(), VmxError>;

    /// VMPTRLD of the VMCS region at `vmcs`.
    fn vmptrld(&mut self, vmcs: Hpa) -> Result<(), VmxError>;

    /// VMREAD of `field` in the current VMCS.
    fn vmread(&mut self, field: VmcsField) -> Result<u64, VmxError>;

    /// VMWRITE of `field` in the current VMCS.
    fn vmwrite(&mut self, field: VmcsField, value: u64) -> Result<(), VmxError>;

    /// VMLAUNCH (`launch`) or VMRESUME with the guest's general-purpose registers `regs`,
    /// then run the guest to its next VM exit (or, on the software CPU, the end of a slice);
    /// `regs` then holds the guest's registers at the exit. The host's own state around the
    /// guest (its registers, stacks) is the backend's business.
    fn run(&mut self, launch: bool, regs: &mut GuestRegs) -> Result<RunOutcome, VmxError>;

    /// INVEPT of `kind` for the EPT pointer `eptp` (ignored for the global type).
    fn invept(&mut self, kind: InveptType, eptp: u64) -> Result<(), VmxError>;

    /// INVVPID of `kind` for `vpid` and the linear address `addr` (individual-address type).
    fn invvpid(&mut self, kind: InvvpidType, vpid: u16, addr: u64) -> Result<(), VmxError>;

    /// RDMSR of a VMX capability MSR (IA32_VMX_BASIC … IA32_VMX_VMFUNC): what the processor
    /// supports, so the hypervisor adjusts its controls to it.
    fn capability(&mut self, msr: u32) -> Result<u64, VmxError>;
}
