//! The software CPU as the hypervisor's VMX backend ([`hv::vmx::Vmx`]): what makes `crates/hv`
//! the native L0 (DESIGN.md §2, §5). Each trait method is the CPU's native VMX operation
//! (`cpu::Cpu::native_*`), the same silicon the VMX instructions use; `run` swaps the guest's
//! general-purpose registers into the CPU, runs it on the board until its next VM exit (or
//! the end of a slice of `slice` steps), and swaps them back.

use cpu::{Bus, Cpu, NativeRun, StopReason, VmFail};
use devices::ByteSink;
use hv::memory::{MemError, PhysMemory};
use hv::platform::Platform;
use hv::vmx::{GuestRegs, RunOutcome, Vmx, VmxError};
use x86::vmx::VmcsField;
use x86::vmx::caps::{InveptType, InvvpidType};
use x86::{Hfn, Hpa};

/// The CPU and its board, driven as a VMX backend; also the hypervisor's memory (the board's
/// RAM, with the frames of `frames` for its own structures) and platform (CPUID, virtual time,
/// the console its guest's output goes to).
#[derive(Debug)]
pub struct SoftVmx<'a, B, S> {
    cpu: &'a mut Cpu,
    bus: &'a mut B,
    /// Steps a guest runs before `run` returns [`RunOutcome::Preempted`].
    slice: u64,
    /// The next frame never handed out, and the end of the range.
    next_frame: u64,
    end_frame: u64,
    free: Vec<u64>,
    console: S,
    /// Retired instructions after which the run stops.
    limit: u64,
}

impl<'a, B: Bus, S: ByteSink> SoftVmx<'a, B, S> {
    /// The backend over `cpu` on `bus`: the hypervisor's frames are `frames` (frame numbers
    /// of board RAM the guest never gets), the first of which becomes the VMXON region; the
    /// CPU enters native VMX root operation.
    pub fn new(
        cpu: &'a mut Cpu,
        bus: &'a mut B,
        frames: core::ops::Range<u64>,
        slice: u64,
        console: S,
    ) -> Result<Self, VmxError> {
        let mut me = Self {
            cpu,
            bus,
            slice,
            next_frame: frames.start,
            end_frame: frames.end,
            free: Vec::new(),
            console,
            limit: u64::MAX,
        };
        let vmxon = me
            .alloc_frame()
            .ok_or_else(|| VmxError::Backend("no frame for the VMXON region".into()))?;
        let revision = cpu::vmx::capabilities::REVISION_ID.to_le_bytes();
        me.write(vmxon.addr(), &revision)
            .map_err(|e| VmxError::Backend(e.to_string()))?;
        let r = me.cpu.native_vmxon(me.bus, vmxon.addr().raw());
        fail(r)?;
        Ok(me)
    }

    /// The CPU (to read its counters and virtual time).
    pub fn cpu(&self) -> &Cpu {
        self.cpu
    }

    /// The board.
    pub fn bus(&mut self) -> &mut B {
        self.bus
    }

    /// Stops the guest once the CPU has retired `limit` instructions in all.
    pub fn set_instruction_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// The console the guest's output went to.
    pub fn console(&mut self) -> &mut S {
        &mut self.console
    }

    /// The RAM bytes of `len` at `at`, if they are RAM.
    fn ram_range(&self, at: Hpa, len: usize) -> Result<core::ops::Range<usize>, MemError> {
        let err = MemError { at };
        let first = self.bus.ram_offset(at.frame()).ok_or(err)?;
        let start = first + at.page_offset() as usize;
        let end = start.checked_add(len).ok_or(err)?;
        let last = at.checked_add(len.saturating_sub(1) as u64).ok_or(err)?;
        let last_off = self.bus.ram_offset(last.frame()).ok_or(err)?;
        if last_off + last.page_offset() as usize + 1 != end || end > self.bus.ram().len() {
            return Err(err);
        }
        Ok(start..end)
    }
}

impl<B: Bus, S: ByteSink> PhysMemory for SoftVmx<'_, B, S> {
    fn read(&mut self, at: Hpa, buf: &mut [u8]) -> Result<(), MemError> {
        let r = self.ram_range(at, buf.len())?;
        buf.copy_from_slice(&self.bus.ram()[r]);
        Ok(())
    }

    fn write(&mut self, at: Hpa, data: &[u8]) -> Result<(), MemError> {
        let r = self.ram_range(at, data.len())?;
        // Code the CPU decoded from these bytes is stale (the range is within one page's
        // frames or contiguous ones: note each page).
        let mut page = r.start & !0xfff;
        while page < r.end {
            self.cpu.note_ram_write(page);
            page += 4096;
        }
        self.bus.ram_mut()[r].copy_from_slice(data);
        Ok(())
    }

    fn alloc_frame(&mut self) -> Option<Hfn> {
        let frame = match self.free.pop() {
            Some(f) => f,
            None if self.next_frame < self.end_frame => {
                self.next_frame += 1;
                self.next_frame - 1
            }
            None => return None,
        };
        let r = self.ram_range(Hfn::new(frame).addr(), 4096).ok()?;
        self.bus.ram_mut()[r].fill(0);
        Some(Hfn::new(frame))
    }

    fn free_frame(&mut self, frame: Hfn) {
        self.free.push(frame.raw());
    }
}

impl<B: Bus, S: ByteSink> Platform for SoftVmx<'_, B, S> {
    fn cpuid(&mut self, leaf: u32, sub: u32) -> [u32; 4] {
        self.cpu.native_cpuid(leaf, sub)
    }

    fn tsc(&self) -> u64 {
        self.cpu.now().tsc()
    }

    fn idle_until(&mut self, tsc: u64) {
        let now = self.cpu.now().tsc();
        self.cpu
            .skip_idle_ticks(tsc.saturating_sub(now).div_ceil(cpu::TSC_PER_TICK));
    }

    fn console(&mut self, byte: u8) {
        self.console.put(byte);
    }

    fn host_state(&self) -> &[(VmcsField, u64)] {
        &cpu::NATIVE_HOST
    }

    fn budget_exhausted(&self) -> bool {
        self.cpu.instructions_retired() >= self.limit
    }
}

/// A native operation's outcome as the trait's.
fn fail<T>(r: Result<Result<T, VmFail>, cpu::CpuError>) -> Result<T, VmxError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(f)) => Err(VmxError::Fail(vm_fail(f))),
        Err(e) => Err(VmxError::Backend(e.to_string())),
    }
}

fn vm_fail(f: VmFail) -> hv::vmx::VmFail {
    match f {
        VmFail::Invalid => hv::vmx::VmFail::Invalid,
        VmFail::Valid(e) => hv::vmx::VmFail::Valid(e),
    }
}

impl<B: Bus, S: ByteSink> Vmx for SoftVmx<'_, B, S> {
    fn vmclear(&mut self, vmcs: Hpa) -> Result<(), VmxError> {
        fail(self.cpu.native_vmclear(self.bus, vmcs.raw()))
    }

    fn vmptrld(&mut self, vmcs: Hpa) -> Result<(), VmxError> {
        fail(self.cpu.native_vmptrld(self.bus, vmcs.raw()))
    }

    fn vmread(&mut self, field: VmcsField) -> Result<u64, VmxError> {
        self.cpu
            .native_vmread(field)
            .map_err(|f| VmxError::Fail(vm_fail(f)))
    }

    fn vmwrite(&mut self, field: VmcsField, value: u64) -> Result<(), VmxError> {
        self.cpu
            .native_vmwrite(field, value)
            .map_err(|f| VmxError::Fail(vm_fail(f)))
    }

    fn run(&mut self, launch: bool, regs: &mut GuestRegs) -> Result<RunOutcome, VmxError> {
        const RSP: usize = 4;
        let gpr = self.cpu.gprs_mut();
        for (i, (slot, value)) in gpr.iter_mut().zip(regs.gpr).enumerate() {
            if i != RSP {
                *slot = value;
            }
        }
        self.cpu.set_cr2(regs.cr2);
        let r = self.cpu.native_run(self.bus, launch, self.slice);
        regs.cr2 = self.cpu.cr2();
        for (i, (slot, value)) in regs.gpr.iter_mut().zip(*self.cpu.gprs_mut()).enumerate() {
            if i != RSP {
                *slot = value;
            }
        }
        match r.map_err(|e| VmxError::Backend(e.to_string()))? {
            NativeRun::Exited => Ok(RunOutcome::Exited),
            NativeRun::Failed(f) => Err(VmxError::Fail(vm_fail(f))),
            NativeRun::Stopped(StopReason::Halted) => Ok(RunOutcome::Preempted { halted: true }),
            NativeRun::Stopped(StopReason::BudgetExhausted | StopReason::BusStop) => {
                Ok(RunOutcome::Preempted { halted: false })
            }
            NativeRun::Stopped(other) => Err(VmxError::Backend(format!(
                "the guest's run ended with {other:?} outside any VM exit"
            ))),
        }
    }

    fn invept(&mut self, kind: InveptType, eptp: u64) -> Result<(), VmxError> {
        self.cpu
            .native_invept(kind as u64, eptp)
            .map_err(|f| VmxError::Fail(vm_fail(f)))
    }

    fn invvpid(&mut self, kind: InvvpidType, vpid: u16, addr: u64) -> Result<(), VmxError> {
        self.cpu
            .native_invvpid(kind as u64, vpid, addr)
            .map_err(|f| VmxError::Fail(vm_fail(f)))
    }

    fn capability(&mut self, msr: u32) -> Result<u64, VmxError> {
        self.cpu
            .native_capability(msr)
            .ok_or_else(|| VmxError::Backend(format!("no VMX capability MSR {msr:#x}")))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code
    use super::*;
    use hv::exit::{Exit, ExitInfo};
    use machine::Machine;
    use x86::reg::{cr0, cr4};
    use x86::vmx::VmcsField as F;

    #[derive(Debug, Default)]
    struct Sink;
    impl ByteSink for Sink {
        fn put(&mut self, _: u8) {}
    }

    const VMXON: u64 = 0x80_0000;
    const VMCS: u64 = 0x80_1000;
    const PD: u64 = 0x10_0000;
    const CODE: u64 = 0x20_0000;

    /// A 32-bit guest with 4-MiB identity pages runs MOV EAX, 0x1234; CPUID; HLT under the
    /// hypervisor trait on the software CPU: the CPUID exits (before it executes), the
    /// registers come back, VMRESUME after skipping it reaches the HLT exit.
    #[test]
    fn a_guest_runs_through_the_vmx_trait_on_the_software_cpu() {
        let mut m = Machine::new(16 << 20, Sink).unwrap();
        let (cpu, board) = m.parts_mut();
        {
            let ram = board.ram_mut();
            for i in 0..4u64 {
                let e = ((i << 22) | 0x83) as u32;
                ram[(PD + 4 * i) as usize..][..4].copy_from_slice(&e.to_le_bytes());
            }
            ram[CODE as usize..][..8].copy_from_slice(&[0xb8, 0x34, 0x12, 0, 0, 0x0f, 0xa2, 0xf4]);
            let rev = cpu::vmx::capabilities::REVISION_ID.to_le_bytes();
            ram[VMCS as usize..][..4].copy_from_slice(&rev);
        }
        let frames = VMXON >> 12..(VMXON >> 12) + 1;
        let mut vmx = SoftVmx::new(cpu, board, frames, 10_000, Sink).unwrap();
        vmx.vmclear(Hpa::new(VMCS)).unwrap();
        vmx.vmptrld(Hpa::new(VMCS)).unwrap();
        // Controls: the TRUE capability MSRs' allowed-0 settings, plus HLT exiting and a
        // 64-bit host (native root operation is 64-bit).
        let must =
            |vmx: &mut SoftVmx<'_, _, _>, msr: u32| vmx.capability(msr).unwrap() & 0xffff_ffff;
        let pin = must(&mut vmx, 0x48d);
        let proc = must(&mut vmx, 0x48e) | (1 << 7);
        let exit = must(&mut vmx, 0x48f) | (1 << 9);
        let entry = must(&mut vmx, 0x490);
        for (f, v) in [
            (F::PinBasedControls, pin),
            (F::PrimaryProcBasedControls, proc),
            (F::PrimaryVmExitControls, exit),
            (F::VmEntryControls, entry),
            (F::VmcsLinkPointer, u64::MAX),
            (F::GuestCr0, cr0::PE | cr0::PG | cr0::NE | cr0::ET),
            (F::GuestCr3, PD),
            (F::GuestCr4, cr4::PSE | cr4::VMXE),
            (F::GuestDr7, 0x400),
            (F::GuestRip, CODE),
            (F::GuestRsp, 0x30_0000),
            (F::GuestRflags, 2),
            (F::GuestLdtrAccessRights, 0x1_0000),
            (F::GuestTrSelector, 0x18),
            (F::GuestTrLimit, 0x67),
            (F::GuestTrAccessRights, 0x8b),
            (F::GuestGdtrLimit, 0xffff),
            (F::GuestIdtrLimit, 0xffff),
        ] {
            vmx.vmwrite(f, v).unwrap();
        }
        for (sel, limit, ar, code) in [
            (
                F::GuestCsSelector,
                F::GuestCsLimit,
                F::GuestCsAccessRights,
                true,
            ),
            (
                F::GuestSsSelector,
                F::GuestSsLimit,
                F::GuestSsAccessRights,
                false,
            ),
            (
                F::GuestDsSelector,
                F::GuestDsLimit,
                F::GuestDsAccessRights,
                false,
            ),
            (
                F::GuestEsSelector,
                F::GuestEsLimit,
                F::GuestEsAccessRights,
                false,
            ),
            (
                F::GuestFsSelector,
                F::GuestFsLimit,
                F::GuestFsAccessRights,
                false,
            ),
            (
                F::GuestGsSelector,
                F::GuestGsLimit,
                F::GuestGsAccessRights,
                false,
            ),
        ] {
            vmx.vmwrite(sel, if code { 0x08 } else { 0x10 }).unwrap();
            vmx.vmwrite(limit, 0xffff_ffff).unwrap();
            vmx.vmwrite(ar, if code { 0xc09b } else { 0xc093 }).unwrap();
        }
        for (f, v) in cpu::NATIVE_HOST {
            vmx.vmwrite(f, v).unwrap();
        }
        let mut regs = GuestRegs::default();
        assert_eq!(vmx.run(true, &mut regs), Ok(RunOutcome::Exited));
        let e = ExitInfo::read(&mut vmx).unwrap();
        assert_eq!(
            (e.exit, e.guest_rip, e.instruction_length),
            (Exit::Cpuid, CODE + 5, 2)
        );
        assert_eq!(regs.gpr[0], 0x1234);
        vmx.vmwrite(F::GuestRip, e.guest_rip + e.instruction_length)
            .unwrap();
        assert_eq!(vmx.run(false, &mut regs), Ok(RunOutcome::Exited));
        assert_eq!(ExitInfo::read(&mut vmx).unwrap().exit, Exit::Hlt);
        // VMLAUNCH of the launched VMCS: VMfailValid(4), as the SDM says.
        assert_eq!(
            vmx.run(true, &mut regs),
            Err(VmxError::Fail(hv::vmx::VmFail::Valid(
                x86::vmx::VmInstructionError::VmlaunchNonClearVmcs
            )))
        );
    }
}
