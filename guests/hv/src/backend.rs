//! The real-VMX backend of the hypervisor: `hv::vmx::Vmx` over the VMX instructions, with the
//! memory and platform services of a bare-metal image (`hv::platform::Host`). The instructions
//! themselves, each with its VMfail outcome decoded from RFLAGS, and the VM-entry/exit
//! trampoline that swaps the guest's general-purpose registers, are those of the VMX test
//! library (`cputests::vmx::insn`): all the inline assembly is there, in one file.
//!
//! Memory: rt maps the first GiB of physical memory at 0, so a host-physical address below
//! 1 GiB is a pointer; the hypervisor's frames come from guest-hv's frame allocator
//! (`frames.rs`).

use alloc::string::String;
use alloc::vec::Vec;

use cputests::vmx::insn::{self, GuestRegs as TrampolineRegs, Outcome};
use cputests::vmx::{Caps, HostState};
use hv::memory::{MemError, PhysMemory};
use hv::platform::Platform;
use hv::vmx::{GuestRegs, RunOutcome, VmFail, Vmx, VmxError};
use x86::vmx::VmInstructionError;
use x86::vmx::VmcsField as F;
use x86::vmx::caps::{InveptType, InvvpidType};
use x86::{Hfn, Hpa};

use crate::frames::Frames;

/// RDTSC: the processor's time-stamp counter (virtual time on nestvisor's board).
fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC reads the time-stamp counter and has no other effect (CR4.TSD is clear in
    // ring 0 anyway).
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The highest physical address the backend touches (rt's identity map).
const MAPPED: u64 = 1 << 30;

/// Checks that the processor offers what guest-hv needs (VMX, EPT, unrestricted guest, VPID)
/// and enters VMX operation. `Err` says what is missing.
pub fn check_vmx() -> Result<Caps, String> {
    let leaf1 = core::arch::x86_64::__cpuid_count(1, 0);
    if leaf1.ecx & (1 << 5) == 0 {
        return Err("this processor has no VMX (CPUID.1:ECX.VMX = 0)".into());
    }
    // IA32_FEATURE_CONTROL locked without "VMX outside SMX": VMX is off for good.
    // SAFETY: IA32_FEATURE_CONTROL exists on every processor with VMX.
    let fc = unsafe { rt::arch::rdmsr(0x3a) };
    if fc & 1 != 0 && fc & (1 << 2) == 0 {
        return Err("VMX is locked off by IA32_FEATURE_CONTROL".into());
    }
    let (caps, _region, outcome) = cputests::vmx::enable();
    if outcome != Outcome::Succeed {
        return Err(alloc::format!("VMXON failed: {outcome}"));
    }
    Ok(caps)
}

/// The real-VMX host.
#[derive(Debug)]
pub struct RealVmx {
    caps: Caps,
    launched_vmcs: Vec<u64>,
    current: Option<u64>,
    frames: Frames,
    host_state: Vec<(F, u64)>,
    at_line_start: bool,
}

fn outcome(o: Outcome) -> Result<(), VmxError> {
    match o {
        Outcome::Succeed => Ok(()),
        Outcome::FailInvalid => Err(VmxError::Fail(VmFail::Invalid)),
        Outcome::FailValid(n) => Err(VmxError::Fail(
            VmInstructionError::from_number(n).map_or(VmFail::Invalid, VmFail::Valid),
        )),
    }
}

impl RealVmx {
    /// The host over VMX operation already entered (`check_vmx`), with the hypervisor's frames
    /// from `frames` (all below 1 GiB).
    pub fn new(caps: Caps, frames: Frames) -> Result<Self, String> {
        let h = HostState::current();
        let [cs, ss, ds, es, fs, gs, tr] = h.selectors;
        let host_state = alloc::vec![
            (F::HostCr0, h.cr0),
            (F::HostCr3, h.cr3),
            (F::HostCr4, h.cr4),
            (F::HostCsSelector, u64::from(cs)),
            (F::HostSsSelector, u64::from(ss)),
            (F::HostDsSelector, u64::from(ds)),
            (F::HostEsSelector, u64::from(es)),
            (F::HostFsSelector, u64::from(fs)),
            (F::HostGsSelector, u64::from(gs)),
            (F::HostTrSelector, u64::from(tr)),
            (F::HostFsBase, h.fs_base),
            (F::HostGsBase, h.gs_base),
            (F::HostTrBase, h.tr_base),
            (F::HostGdtrBase, h.gdtr_base),
            (F::HostIdtrBase, h.idtr_base),
            (F::HostIa32SysenterCs, h.sysenter[0]),
            (F::HostIa32SysenterEsp, h.sysenter[1]),
            (F::HostIa32SysenterEip, h.sysenter[2]),
            (F::HostIa32Efer, h.efer),
            (F::HostIa32Pat, h.pat),
            (F::HostRip, insn::host_rip()),
        ];
        Ok(Self {
            caps,
            launched_vmcs: Vec::new(),
            current: None,
            frames,
            host_state,
            at_line_start: true,
        })
    }

    fn check(&self, at: Hpa, len: usize) -> Result<(), MemError> {
        match at.raw().checked_add(len as u64) {
            Some(end) if end <= MAPPED => Ok(()),
            _ => Err(MemError { at }),
        }
    }
}

impl PhysMemory for RealVmx {
    fn read(&mut self, at: Hpa, buf: &mut [u8]) -> Result<(), MemError> {
        self.check(at, buf.len())?;
        // SAFETY: below 1 GiB, which rt maps at 0; the bytes are plain memory.
        unsafe {
            core::ptr::copy_nonoverlapping(at.raw() as *const u8, buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }

    fn write(&mut self, at: Hpa, data: &[u8]) -> Result<(), MemError> {
        self.check(at, data.len())?;
        // SAFETY: as for `read`; the hypervisor writes only its own frames and the guest's RAM.
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), at.raw() as *mut u8, data.len());
        }
        Ok(())
    }

    fn alloc_frame(&mut self) -> Option<Hfn> {
        let frame = self.frames.alloc()?;
        self.write(frame.addr(), &[0u8; 4096]).ok()?;
        Some(frame)
    }

    fn free_frame(&mut self, frame: Hfn) {
        self.frames.free(frame);
    }
}

impl Platform for RealVmx {
    fn cpuid(&mut self, leaf: u32, sub: u32) -> [u32; 4] {
        let r = core::arch::x86_64::__cpuid_count(leaf, sub);
        [r.eax, r.ebx, r.ecx, r.edx]
    }

    fn tsc(&self) -> u64 {
        rdtsc()
    }

    fn idle_until(&mut self, tsc: u64) {
        // No interrupt is enabled in guest-hv: wait by watching the TSC.
        while rdtsc() < tsc {
            core::hint::spin_loop();
        }
    }

    fn console(&mut self, byte: u8) {
        if self.at_line_start {
            rt::serial::write_bytes(b"[L1] ");
        }
        rt::serial::write_byte(byte);
        self.at_line_start = byte == b'\n';
    }

    fn host_state(&self) -> &[(F, u64)] {
        &self.host_state
    }
}

impl Vmx for RealVmx {
    fn vmclear(&mut self, vmcs: Hpa) -> Result<(), VmxError> {
        outcome(insn::vmclear(vmcs.raw()))?;
        self.launched_vmcs.retain(|&v| v != vmcs.raw());
        if self.current == Some(vmcs.raw()) {
            self.current = None;
        }
        Ok(())
    }

    fn vmptrld(&mut self, vmcs: Hpa) -> Result<(), VmxError> {
        outcome(insn::vmptrld(vmcs.raw()))?;
        self.current = Some(vmcs.raw());
        Ok(())
    }

    fn vmread(&mut self, field: F) -> Result<u64, VmxError> {
        insn::vmread(field.encoding())
            .map_err(|o| outcome(o).err().unwrap_or(VmxError::Fail(VmFail::Invalid)))
    }

    fn vmwrite(&mut self, field: F, value: u64) -> Result<(), VmxError> {
        outcome(insn::vmwrite(field.encoding(), value))
    }

    fn run(&mut self, launch: bool, regs: &mut GuestRegs) -> Result<RunOutcome, VmxError> {
        let r = &regs.gpr;
        let mut t = TrampolineRegs {
            rax: r[0],
            rcx: r[1],
            rdx: r[2],
            rbx: r[3],
            rbp: r[5],
            rsi: r[6],
            rdi: r[7],
            r8: r[8],
            r9: r[9],
            r10: r[10],
            r11: r[11],
            r12: r[12],
            r13: r[13],
            r14: r[14],
            r15: r[15],
        };
        // CR2 is the guest's while it runs: nothing in guest-hv page-faults.
        if rt::arch::read_cr2() != regs.cr2 {
            // SAFETY: guest-hv runs at CPL 0 and has no page-fault handler that reads CR2.
            unsafe { rt::arch::write_cr2(regs.cr2) };
        }
        // SAFETY: the VMCS's host state is guest-hv's own (host_state), landing at the
        // trampoline's host RIP on this stack; the guest runs in its own memory (EPT or
        // shadow page tables map nothing else).
        let entered = unsafe { insn::enter(&mut t, !launch) };
        regs.cr2 = rt::arch::read_cr2();
        let r = &mut regs.gpr;
        (r[0], r[1], r[2], r[3], r[5], r[6], r[7]) =
            (t.rax, t.rcx, t.rdx, t.rbx, t.rbp, t.rsi, t.rdi);
        (r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]) =
            (t.r8, t.r9, t.r10, t.r11, t.r12, t.r13, t.r14, t.r15);
        entered.map_err(|o| outcome(o).err().unwrap_or(VmxError::Fail(VmFail::Invalid)))?;
        Ok(RunOutcome::Exited)
    }

    fn invept(&mut self, kind: InveptType, eptp: u64) -> Result<(), VmxError> {
        outcome(insn::invept(kind as u64, &[eptp, 0]))
    }

    fn invvpid(&mut self, kind: InvvpidType, vpid: u16, addr: u64) -> Result<(), VmxError> {
        outcome(insn::invvpid(kind as u64, &[u64::from(vpid), addr]))
    }

    fn capability(&mut self, msr: u32) -> Result<u64, VmxError> {
        let _ = &self.caps;
        if !(0x480..=0x493).contains(&msr) {
            return Err(VmxError::Backend(alloc::format!(
                "not a VMX capability MSR: {msr:#x}"
            )));
        }
        // SAFETY: a VMX capability MSR on a processor in VMX operation (checked); an MSR the
        // processor lacks would #GP, and guest-hv asks only for the ones it needs.
        Ok(unsafe { rt::arch::rdmsr(msr) })
    }
}
