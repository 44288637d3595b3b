//! VMX driven by the program that owns the processor: nestvisor's native hypervisor (L0, the
//! "KVM" of DESIGN.md §2) is the software in VMX root operation, written in Rust rather than
//! in guest code. It uses the same silicon as the VMX instructions (the same VMXON, VMCLEAR,
//! VMPTRLD, VMREAD, VMWRITE operations, the same VM entry with every check, the same non-root
//! operation and VM exits); only the instruction's own fault checks and operand decoding are
//! skipped, since no instruction executes. A VM exit ends [`Cpu::native_run`] instead of going
//! on at the host RIP, the way a VM exit returns to KVM's `vmx_vcpu_run`.
//!
//! In native root operation the processor's own registers are the host's: [`Cpu::native_vmxon`]
//! puts it in a flat 64-bit state, and [`NATIVE_HOST`] lists the host-state fields that match
//! it, which the hypervisor writes into each VMCS (as KVM's `vmx_set_constant_host_state`).

use x86::reg::{cr0, cr4, efer};
use x86::vmx::VmcsField as F;

use crate::Cpu;
use crate::bus::Bus;
use crate::error::{CpuError, StopReason};
use crate::fault::Exc;
use crate::ops::vmx::{VmFail, VmResult};
use crate::state::{DescriptorTable, Seg, Segment, ar};

/// The host-state fields of native root operation: a flat 64-bit ring-0 state with CS = 08H,
/// data selectors 10H and TR = 18H, no paging structures in use (CR3 = 0 is never walked: the
/// host never executes instructions).
pub const NATIVE_HOST: [(F, u64); 12] = [
    (F::HostCr0, cr0::PE | cr0::NE | cr0::PG | cr0::ET),
    (F::HostCr3, 0),
    (F::HostCr4, cr4::PAE | cr4::VMXE),
    (F::HostCsSelector, 0x08),
    (F::HostSsSelector, 0x10),
    (F::HostDsSelector, 0x10),
    (F::HostEsSelector, 0x10),
    (F::HostTrSelector, 0x18),
    (F::HostIa32Efer, efer::LME | efer::LMA),
    (F::HostRip, 0),
    (F::HostRsp, 0),
    (F::HostIa32Pat, crate::msr::PAT_RESET),
];

/// How [`Cpu::native_run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeRun {
    /// VM entry failed with VMfailInvalid or VMfailValid: the guest never ran.
    Failed(VmFail),
    /// A VM exit, or a VM-entry failure exit (reason 33 or 34 with bit 31): the exit
    /// information is in the current VMCS; the processor is back in root operation.
    Exited,
    /// The guest is still running (VMX non-root operation) and the run stopped for another
    /// reason: the instruction budget ran out, the guest halted without HLT exiting (the
    /// board may skip idle time and call [`Cpu::native_run`] again), or a device asked to stop.
    Stopped(StopReason),
}

impl Cpu {
    /// Enters native VMX root operation with the VMXON region at physical `region`: the
    /// processor takes the flat 64-bit state [`NATIVE_HOST`] describes.
    pub fn native_vmxon<B: Bus>(
        &mut self,
        bus: &mut B,
        region: u64,
    ) -> Result<VmResult<()>, CpuError> {
        self.cr0 = cr0::PE | cr0::NE | cr0::PG | cr0::ET;
        self.cr3 = 0;
        self.cr4 = cr4::PAE | cr4::VMXE;
        self.efer = efer::LME | efer::LMA;
        let data = ar::ACCESSED | ar::RW | ar::S | ar::P | ar::DB | ar::G;
        for s in Seg::ALL {
            self.seg[s as usize] = Segment {
                selector: 0x10,
                base: 0,
                limit: 0xffff_ffff,
                ar: data,
            };
        }
        self.seg[Seg::Cs as usize] = Segment {
            selector: 0x08,
            base: 0,
            limit: 0xffff_ffff,
            ar: ar::ACCESSED | ar::RW | ar::CODE | ar::S | ar::P | ar::L | ar::G,
        };
        self.tr = Segment {
            selector: 0x18,
            base: 0,
            limit: 0x67,
            ar: ar::P | 0xb,
        };
        self.gdtr = DescriptorTable {
            base: 0,
            limit: 0xffff,
        };
        self.idtr = self.gdtr;
        self.cpl = 0;
        self.update_mode();
        self.vmx.native = true;
        native(self.vmx_op_on(bus, region))
    }

    /// VMCLEAR of the VMCS at physical `addr`.
    pub fn native_vmclear<B: Bus>(
        &mut self,
        bus: &mut B,
        addr: u64,
    ) -> Result<VmResult<()>, CpuError> {
        native(self.vmx_op_clear(bus, addr))
    }

    /// VMPTRLD of the VMCS at physical `addr`.
    pub fn native_vmptrld<B: Bus>(
        &mut self,
        bus: &mut B,
        addr: u64,
    ) -> Result<VmResult<()>, CpuError> {
        native(self.vmx_op_ptrld(bus, addr))
    }

    /// VMREAD of `field` in the current VMCS.
    pub fn native_vmread(&self, field: F) -> VmResult<u64> {
        self.vmx_op_read(u64::from(field.encoding()))
    }

    /// VMWRITE of `field` in the current VMCS.
    pub fn native_vmwrite(&mut self, field: F, value: u64) -> VmResult<()> {
        self.vmx_op_write(u64::from(field.encoding()), value)
    }

    /// VMLAUNCH (`launch`) or VMRESUME of the current VMCS, then the guest runs for up to
    /// `budget` steps, until its next VM exit. Called again after [`NativeRun::Stopped`], it
    /// goes on running the guest (the entry has happened).
    pub fn native_run<B: Bus>(
        &mut self,
        bus: &mut B,
        launch: bool,
        budget: u64,
    ) -> Result<NativeRun, CpuError> {
        if !self.vmx.non_root {
            self.halted = false;
            let entered = match self.vmx_op_enter(bus, launch) {
                // The entry succeeded and the delivery of the injected event faulted: the
                // fault is the guest's, delivered (or exiting, with the injected event as
                // IDT-vectoring information) as after any instruction (SDM Vol. 3C §27.6.1).
                Err(e @ (Exc::Fault(_) | Exc::VmExit(_) | Exc::Shutdown)) if self.vmx.non_root => {
                    self.retired += 1;
                    if let Some(stop) = self.conclude(bus, Err(e)) {
                        return Ok(match stop? {
                            StopReason::VmExit => NativeRun::Exited,
                            other => NativeRun::Stopped(other),
                        });
                    }
                    None
                }
                other => Some(other),
            };
            if let Some(entered) = entered {
                match native(entered)? {
                    Err(fail) => return Ok(NativeRun::Failed(fail)),
                    // An entry-failure exit: reported like any exit.
                    Ok(()) if !self.vmx.non_root => return Ok(NativeRun::Exited),
                    Ok(()) => {}
                }
                // VM entry counts as the step of the VMLAUNCH/VMRESUME it stands for.
                self.retired += 1;
            }
        }
        Ok(match self.run(bus, budget)? {
            StopReason::VmExit => NativeRun::Exited,
            other => NativeRun::Stopped(other),
        })
    }

    /// INVEPT of type `kind` (1 single-context, 2 all-context) for `eptp`.
    pub fn native_invept(&mut self, kind: u64, eptp: u64) -> VmResult<()> {
        self.vmx_op_invept(kind, eptp)
    }

    /// INVVPID of type `kind` (0 individual-address … 3 single-context retaining globals) for
    /// `vpid` and `address`.
    pub fn native_invvpid(&mut self, kind: u64, vpid: u16, address: u64) -> VmResult<()> {
        self.vmx_op_invvpid(kind, u64::from(vpid), address)
    }

    /// RDMSR of a VMX capability MSR (IA32_VMX_BASIC … IA32_VMX_VMFUNC), `None` for another
    /// index or without VMX.
    pub fn native_capability(&self, msr: u32) -> Option<u64> {
        if !self.features.vmx {
            return None;
        }
        crate::vmx::capabilities::MODEL.read_msr(msr)
    }

    /// CPUID of this processor for `leaf` and `sub` (what the instruction returns in root
    /// operation), for a native hypervisor to base its guest's CPUID on.
    pub fn native_cpuid(&self, leaf: u32, sub: u32) -> [u32; 4] {
        let [a, b, mut c, d] = crate::cpuid::cpuid(leaf, sub);
        if leaf == 1 && self.features.vmx {
            c |= crate::cpuid::VMX;
        }
        [a, b, c, d]
    }

    /// The guest's general-purpose registers while it runs (the VMCS holds only RSP): the
    /// native hypervisor sets them before [`Cpu::native_run`] and reads them after.
    pub fn gprs_mut(&mut self) -> &mut [u64; 16] {
        &mut self.gpr
    }

    /// Whether the processor is in native VMX root operation ([`Cpu::native_vmxon`]).
    pub fn is_native_root(&self) -> bool {
        self.vmx.native
    }
}

/// The outcome of a VMX operation for a native caller: a fault cannot happen (no instruction
/// executes); a region outside RAM is the model error it is for instructions too.
fn native<T>(r: Result<VmResult<T>, Exc>) -> Result<VmResult<T>, CpuError> {
    match r {
        Ok(v) => Ok(v),
        Err(Exc::Error(e)) => Err(*e),
        Err(other) => Err(CpuError::Unsupported {
            rip: 0,
            what: match other {
                Exc::Fault(_) => "a fault in native VMX root operation (model bug)",
                Exc::VmExit(_) => "a VM exit in native VMX root operation (model bug)",
                _ => "a shutdown in native VMX root operation (model bug)",
            },
        }),
    }
}
