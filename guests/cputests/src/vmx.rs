//! A small VMX library for the bare-metal VMX test programs (`src/bin/vmx-*`), written against
//! SDM Vol. 3C (2023–2024 numbering): enabling VMX operation (§24.7 "Enabling and Entering VMX
//! Operation": IA32_FEATURE_CONTROL, the CR0/CR4 fixed bits of Vol. 3D §A.7–A.8, the VMXON
//! region of §25.11.5), VMCS regions (§25.2), typed wrappers for every VMX instruction
//! ([`insn`], ch. 31), the capability MSRs (Vol. 3D Appendix A) with the control adjustment of
//! §A.3 against the TRUE MSRs, the field encodings ([`fields`], Vol. 3D Appendix B), and a
//! [`Vm`] that sets up the host-state area from the processor's current state (§26.2.2 checks,
//! §28.5 loading host state) and the guest-state area for a 64-bit guest running a function on
//! its own stack in the same address space (§27.3.1 checks), launches or resumes it and
//! returns each VM exit as an [`Exit`] (§28.2 "Recording VM-Exit Information"). The structure
//! follows kvm-unit-tests x86/vmx.c (`init_vmcs_ctrl`, `init_vmcs_host`, `init_vmcs_guest`,
//! `vmx_run`).
//!
//! Every region comes from the page-frame pool of [`crate::paging`] (zeroed, 4-KiB aligned,
//! reachable at `virt(pa)`).

pub mod fields;
pub mod insn;

use crate::paging::{self, virt};
use fields::*;
pub use insn::{GuestRegs, Outcome, vmclear, vmptrld, vmptrst, vmread, vmwrite, vmxoff, vmxon};
use rt::arch::{rdmsr, read_cr0, read_cr3, read_cr4, write_cr0, write_cr4, wrmsr};

/// IA32_FEATURE_CONTROL (Vol. 4 Table 2-2): bit 0 lock, bit 2 VMX outside SMX.
pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
/// IA32_FEATURE_CONTROL.Lock: further writes raise #GP; VMXON needs it set.
pub const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
/// IA32_FEATURE_CONTROL: VMXON allowed outside SMX operation.
pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

pub const IA32_SYSENTER_CS: u32 = 0x174;
pub const IA32_SYSENTER_ESP: u32 = 0x175;
pub const IA32_SYSENTER_EIP: u32 = 0x176;
pub const IA32_PAT: u32 = 0x277;
pub const IA32_EFER: u32 = 0xC000_0080;
pub const IA32_FS_BASE: u32 = 0xC000_0100;
pub const IA32_GS_BASE: u32 = 0xC000_0101;
pub const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;
pub const IA32_TSC_AUX: u32 = 0xC000_0103;

// The VMX capability MSRs (Vol. 3D Appendix A).
pub const IA32_VMX_BASIC: u32 = 0x480;
pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
pub const IA32_VMX_MISC: u32 = 0x485;
pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
pub const IA32_VMX_VMCS_ENUM: u32 = 0x48A;
pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48B;
pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;

/// IA32_VMX_BASIC bit 55: the TRUE control MSRs exist (§A.1).
pub const BASIC_TRUE_CONTROLS: u64 = 1 << 55;
/// CR4.VMXE.
pub const CR4_VMXE: u64 = 1 << 13;
/// CR0.PE, CR0.NE, CR0.PG.
pub const CR0_PE: u64 = 1 << 0;
pub const CR0_NE: u64 = 1 << 5;
pub const CR0_PG: u64 = 1 << 31;

// The VM-execution, VM-exit and VM-entry control bits (§25.6–§25.8) come from the host's own
// `nestvisor-x86` crate (no_std), under the short names these programs use.
pub use x86::vmx::controls::{
    entry, exit, pin_based as pin, primary_proc as proc, secondary_proc as proc2,
};

/// Basic exit reasons (Vol. 3D Appendix C).
pub mod reason {
    pub const EXCEPTION_OR_NMI: u32 = 0;
    pub const EXTERNAL_INTERRUPT: u32 = 1;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INTERRUPT_WINDOW: u32 = 7;
    pub const NMI_WINDOW: u32 = 8;
    pub const CPUID: u32 = 10;
    pub const HLT: u32 = 12;
    pub const INVLPG: u32 = 14;
    pub const RDPMC: u32 = 15;
    pub const RDTSC: u32 = 16;
    pub const VMCALL: u32 = 18;
    pub const VMCLEAR: u32 = 19;
    pub const VMLAUNCH: u32 = 20;
    pub const VMPTRLD: u32 = 21;
    pub const VMPTRST: u32 = 22;
    pub const VMREAD: u32 = 23;
    pub const VMRESUME: u32 = 24;
    pub const VMWRITE: u32 = 25;
    pub const VMXOFF: u32 = 26;
    pub const VMXON: u32 = 27;
    pub const CR_ACCESS: u32 = 28;
    pub const MOV_DR: u32 = 29;
    pub const IO_INSTRUCTION: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const INVALID_GUEST_STATE: u32 = 33;
    pub const MSR_LOADING: u32 = 34;
    pub const MWAIT: u32 = 36;
    pub const MONITOR: u32 = 39;
    pub const PAUSE: u32 = 40;
    pub const GDTR_IDTR_ACCESS: u32 = 46;
    pub const LDTR_TR_ACCESS: u32 = 47;
    pub const EPT_VIOLATION: u32 = 48;
    pub const EPT_MISCONFIGURATION: u32 = 49;
    pub const INVEPT: u32 = 50;
    pub const RDTSCP: u32 = 51;
    pub const PREEMPTION_TIMER: u32 = 52;
    pub const INVVPID: u32 = 53;
    pub const WBINVD: u32 = 54;
    pub const RDRAND: u32 = 57;
    pub const INVPCID: u32 = 58;
    pub const RDSEED: u32 = 61;
    /// Bit 31 of the exit-reason field: VM-entry failure (§28.2.1, Table 28-1... §27.8).
    pub const ENTRY_FAILURE: u32 = 1 << 31;
}

/// The capability MSRs, read once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    pub basic: u64,
    /// Pin-based, primary, exit and entry controls: the TRUE MSRs when BASIC[55] says they
    /// exist (§A.2), else the plain ones.
    pub pin: u64,
    pub proc: u64,
    pub proc2: u64,
    pub exit: u64,
    pub entry: u64,
    pub misc: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    pub vmcs_enum: u64,
    pub ept_vpid: u64,
}

impl Caps {
    /// Reads the capability MSRs (needs CPUID.1:ECX.VMX = 1).
    pub fn read() -> Caps {
        // SAFETY: the VMX capability MSRs exist when CPUID reports VMX; RDMSR has no side
        // effects.
        unsafe {
            let basic = rdmsr(IA32_VMX_BASIC);
            let t = basic & BASIC_TRUE_CONTROLS != 0;
            let pick = |plain: u32, tru: u32| if t { rdmsr(tru) } else { rdmsr(plain) };
            let proc = pick(IA32_VMX_PROCBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS);
            Caps {
                basic,
                pin: pick(IA32_VMX_PINBASED_CTLS, IA32_VMX_TRUE_PINBASED_CTLS),
                proc,
                proc2: if (proc >> 32) as u32 & proc::ACTIVATE_SECONDARY_CONTROLS != 0 {
                    rdmsr(IA32_VMX_PROCBASED_CTLS2)
                } else {
                    0
                },
                exit: pick(IA32_VMX_EXIT_CTLS, IA32_VMX_TRUE_EXIT_CTLS),
                entry: pick(IA32_VMX_ENTRY_CTLS, IA32_VMX_TRUE_ENTRY_CTLS),
                misc: rdmsr(IA32_VMX_MISC),
                cr0_fixed0: rdmsr(IA32_VMX_CR0_FIXED0),
                cr0_fixed1: rdmsr(IA32_VMX_CR0_FIXED1),
                cr4_fixed0: rdmsr(IA32_VMX_CR4_FIXED0),
                cr4_fixed1: rdmsr(IA32_VMX_CR4_FIXED1),
                vmcs_enum: rdmsr(IA32_VMX_VMCS_ENUM),
                ept_vpid: rdmsr(IA32_VMX_EPT_VPID_CAP),
            }
        }
    }

    /// The VMCS revision identifier (BASIC bits 30:0).
    pub fn revision(&self) -> u32 {
        (self.basic & 0x7FFF_FFFF) as u32
    }

    /// The preemption timer rate: it counts down by 1 each time TSC bit `rate` changes
    /// (MISC bits 4:0, §A.6).
    pub fn preemption_timer_rate(&self) -> u32 {
        (self.misc & 0x1F) as u32
    }

    /// The number of CR3-target values supported (MISC bits 24:16).
    pub fn cr3_targets(&self) -> u32 {
        ((self.misc >> 16) & 0x1FF) as u32
    }

    /// The maximum number of MSRs in each MSR list: 512 × (MISC[27:25] + 1).
    pub fn max_msr_list(&self) -> u32 {
        512 * (((self.misc >> 25) & 7) as u32 + 1)
    }
}

/// `want` adjusted to a control MSR (§A.3.1): bits that must be 1 (low half) are set, bits that
/// may not be 1 (clear in the high half) are cleared.
pub fn adjust(msr: u64, want: u32) -> u32 {
    (want | msr as u32) & (msr >> 32) as u32
}

/// Whether every bit of `bits` may be 1 in the control MSR `msr`.
pub fn allowed1(msr: u64, bits: u32) -> bool {
    (msr >> 32) as u32 & bits == bits
}

/// Sets IA32_FEATURE_CONTROL's lock and "VMX outside SMX" bits if it is not locked yet; returns
/// its value afterwards.
pub fn lock_feature_control() -> u64 {
    // SAFETY: IA32_FEATURE_CONTROL exists when VMX does; locking it only enables VMXON.
    unsafe {
        let v = rdmsr(IA32_FEATURE_CONTROL);
        if v & FEATURE_CONTROL_LOCK == 0 {
            wrmsr(
                IA32_FEATURE_CONTROL,
                v | FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMX_OUTSIDE_SMX,
            );
        }
        rdmsr(IA32_FEATURE_CONTROL)
    }
}

/// Sets CR0 and CR4 to satisfy the VMX fixed bits (§24.8, Vol. 3D §A.7, §A.8): every bit
/// fixed to 1 is set (CR4.VMXE among them), every bit fixed to 0 cleared.
pub fn fix_control_registers(caps: &Caps) {
    let cr0 = (read_cr0() | caps.cr0_fixed0) & caps.cr0_fixed1;
    let cr4 = (read_cr4() | caps.cr4_fixed0 | CR4_VMXE) & caps.cr4_fixed1;
    // SAFETY: the fixed bits keep protected mode, paging and NE on (the running state);
    // CR4.VMXE has no other effect.
    unsafe {
        write_cr0(cr0);
        write_cr4(cr4);
    }
}

/// A zeroed 4-KiB region with the revision identifier in its first word (bit 31 set for a
/// shadow VMCS, §25.2): its physical address.
pub fn region(revision: u32, shadow: bool) -> u64 {
    let pa = paging::alloc_frame();
    let word = revision | if shadow { 1 << 31 } else { 0 };
    // SAFETY: a fresh pool frame.
    unsafe { (virt(pa) as *mut u32).write_volatile(word) };
    pa
}

/// Everything needed to enter VMX root operation: locks FEATURE_CONTROL, fixes CR0/CR4 and
/// executes VMXON on a fresh region. Returns the capabilities, the VMXON region and the outcome.
pub fn enable() -> (Caps, u64, Outcome) {
    let caps = Caps::read();
    lock_feature_control();
    fix_control_registers(&caps);
    let vmxon_region = region(caps.revision(), false);
    let outcome = vmxon(vmxon_region);
    (caps, vmxon_region, outcome)
}

/// Reads `field` of the current VMCS, `u64::MAX` when VMREAD fails (a test then sees a value
/// the SDM never prescribes).
pub fn read(field: u32) -> u64 {
    vmread(field).unwrap_or(u64::MAX)
}

/// Writes `field` of the current VMCS; panics when VMWRITE fails (a bug of the program).
pub fn write(field: u32, value: u64) {
    let outcome = vmwrite(field, value);
    assert!(
        outcome == Outcome::Succeed,
        "VMWRITE {field:#x} = {value:#x}: {outcome}"
    );
}

/// One VM exit as the VMCS records it (§28.2), read right after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exit {
    /// The full exit-reason field (bit 31: VM-entry failure).
    pub reason: u32,
    pub qualification: u64,
    pub interruption_info: u32,
    pub interruption_error: u32,
    pub idt_vectoring_info: u32,
    pub instruction_length: u32,
    pub instruction_info: u32,
    pub guest_linear: u64,
    pub guest_physical: u64,
    pub guest_rip: u64,
    pub guest_rsp: u64,
    pub guest_rflags: u64,
}

impl Exit {
    /// The basic exit reason (bits 15:0).
    pub fn basic(&self) -> u32 {
        self.reason & 0xFFFF
    }

    fn read() -> Exit {
        Exit {
            reason: read(EXIT_REASON) as u32,
            qualification: read(EXIT_QUALIFICATION),
            interruption_info: read(VM_EXIT_INTERRUPTION_INFORMATION) as u32,
            interruption_error: read(VM_EXIT_INTERRUPTION_ERROR_CODE) as u32,
            idt_vectoring_info: read(IDT_VECTORING_INFORMATION) as u32,
            instruction_length: read(VM_EXIT_INSTRUCTION_LENGTH) as u32,
            instruction_info: read(VM_EXIT_INSTRUCTION_INFORMATION) as u32,
            guest_linear: read(GUEST_LINEAR_ADDRESS),
            guest_physical: read(GUEST_PHYSICAL_ADDRESS),
            guest_rip: read(GUEST_RIP),
            guest_rsp: read(GUEST_RSP),
            guest_rflags: read(GUEST_RFLAGS),
        }
    }
}

/// Size of a guest stack.
pub const GUEST_STACK_SIZE: u64 = 4 * 4096;

/// Segment access rights (§25.4.1, Table 25-2): 64-bit code (type 0xB accessed execute/read,
/// S, P, L, G).
pub const AR_CODE64: u64 = 0xA09B;
/// Data (type 3 accessed read/write, S, P, D/B, G).
pub const AR_DATA: u64 = 0xC093;
/// A busy 64-bit TSS (type 11, P).
pub const AR_TSS_BUSY: u64 = 0x8B;
/// Bit 16: the segment is unusable.
pub const AR_UNUSABLE: u64 = 1 << 16;

/// A VMCS and its guest: the region, the guest registers, whether it was launched.
#[derive(Debug)]
pub struct Vm {
    pub vmcs: u64,
    pub regs: GuestRegs,
    pub launched: bool,
    pub caps: Caps,
    /// The host state written by [`Vm::setup_host`], for comparisons after an exit.
    pub host: HostState,
}

/// The processor state the host-state area is written from.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub selectors: [u16; 7],
    pub gdtr_limit: u16,
    pub gdtr_base: u64,
    pub idtr_limit: u16,
    pub idtr_base: u64,
    pub tr_base: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub efer: u64,
    pub pat: u64,
    pub sysenter: [u64; 3],
}

impl HostState {
    /// The current processor state.
    pub fn current() -> HostState {
        let (gdtr_limit, gdtr_base, idtr_limit, idtr_base) = insn::descriptor_tables();
        let selectors = insn::selectors();
        let tr = selectors[6];
        // The TR base from its descriptor in the GDT (Vol. 3A Figure 9-4, 16 bytes in 64-bit mode).
        // SAFETY: TR names a TSS descriptor inside the live GDT.
        let (lo, hi) = unsafe {
            let p = (gdtr_base + u64::from(tr & !7)) as *const u64;
            (p.read_volatile(), p.add(1).read_volatile())
        };
        let tr_base = ((lo >> 16) & 0xFF_FFFF) | (((lo >> 56) & 0xFF) << 24) | (hi << 32);
        // SAFETY: architectural MSRs of every x86-64 processor; RDMSR has no side effects.
        let (fs_base, gs_base, efer, pat, sysenter) = unsafe {
            (
                rdmsr(IA32_FS_BASE),
                rdmsr(IA32_GS_BASE),
                rdmsr(IA32_EFER),
                rdmsr(IA32_PAT),
                [
                    rdmsr(IA32_SYSENTER_CS),
                    rdmsr(IA32_SYSENTER_ESP),
                    rdmsr(IA32_SYSENTER_EIP),
                ],
            )
        };
        HostState {
            cr0: read_cr0(),
            cr3: read_cr3(),
            cr4: read_cr4(),
            selectors,
            gdtr_limit,
            gdtr_base,
            idtr_limit,
            idtr_base,
            tr_base,
            fs_base,
            gs_base,
            efer,
            pat,
            sysenter,
        }
    }
}

/// A 16-byte aligned guest stack from the pool: its top (a kernel virtual address).
pub fn guest_stack() -> u64 {
    let mut top = 0;
    for _ in 0..GUEST_STACK_SIZE / 4096 {
        top = paging::alloc_frame();
    }
    // Frames come in increasing order from the pool; the last one's end is the top.
    virt(top) as u64 + 4096
}

impl Vm {
    /// A new VMCS (cleared, made current) with the standard controls, host state and a guest
    /// that calls `guest(arg)` on its own stack and then VMCALLs with RAX = [`insn::GUEST_DONE`].
    pub fn new(caps: &Caps, guest: unsafe extern "C" fn(u64), arg: u64) -> Vm {
        let vmcs = region(caps.revision(), false);
        let mut vm = Vm {
            vmcs,
            regs: GuestRegs::default(),
            launched: false,
            caps: *caps,
            host: HostState::current(),
        };
        assert!(vmclear(vmcs) == Outcome::Succeed, "VMCLEAR");
        assert!(vmptrld(vmcs) == Outcome::Succeed, "VMPTRLD");
        vm.setup_controls();
        vm.setup_host();
        vm.setup_guest(guest as usize as u64, arg);
        vm
    }

    /// The standard controls: everything off that may be off, 64-bit host, IA-32e guest, EFER
    /// and PAT saved and loaded both ways.
    pub fn setup_controls(&mut self) {
        let c = &self.caps;
        write(PIN_BASED_VM_EXECUTION_CONTROLS, u64::from(adjust(c.pin, 0)));
        write(
            PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            u64::from(adjust(c.proc, 0)),
        );
        write(
            SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            u64::from(adjust(c.proc2, 0)),
        );
        write(
            PRIMARY_VM_EXIT_CONTROLS,
            u64::from(adjust(
                c.exit,
                exit::HOST_ADDRESS_SPACE_SIZE
                    | exit::SAVE_IA32_EFER
                    | exit::LOAD_IA32_EFER
                    | exit::SAVE_IA32_PAT
                    | exit::LOAD_IA32_PAT,
            )),
        );
        write(
            VM_ENTRY_CONTROLS,
            u64::from(adjust(
                c.entry,
                entry::IA32E_MODE_GUEST | entry::LOAD_IA32_EFER | entry::LOAD_IA32_PAT,
            )),
        );
        for f in [
            EXCEPTION_BITMAP,
            PAGE_FAULT_ERROR_CODE_MASK,
            PAGE_FAULT_ERROR_CODE_MATCH,
            CR3_TARGET_COUNT,
            VM_EXIT_MSR_STORE_COUNT,
            VM_EXIT_MSR_LOAD_COUNT,
            VM_ENTRY_MSR_LOAD_COUNT,
            VM_ENTRY_INTERRUPTION_INFORMATION,
            CR0_GUEST_HOST_MASK,
            CR4_GUEST_HOST_MASK,
            CR0_READ_SHADOW,
            CR4_READ_SHADOW,
        ] {
            write(f, 0);
        }
    }

    /// The host-state area from the current processor state (§26.2.2–26.2.4); HOST_RSP and
    /// HOST_RIP are written on each entry by [`insn::enter`].
    pub fn setup_host(&mut self) {
        let h = HostState::current();
        self.host = h;
        write(HOST_CR0, h.cr0);
        write(HOST_CR3, h.cr3);
        write(HOST_CR4, h.cr4);
        let [cs, ss, ds, es, fs, gs, tr] = h.selectors;
        for (f, s) in [
            (HOST_CS_SELECTOR, cs),
            (HOST_SS_SELECTOR, ss),
            (HOST_DS_SELECTOR, ds),
            (HOST_ES_SELECTOR, es),
            (HOST_FS_SELECTOR, fs),
            (HOST_GS_SELECTOR, gs),
            (HOST_TR_SELECTOR, tr),
        ] {
            write(f, u64::from(s));
        }
        write(HOST_FS_BASE, h.fs_base);
        write(HOST_GS_BASE, h.gs_base);
        write(HOST_TR_BASE, h.tr_base);
        write(HOST_GDTR_BASE, h.gdtr_base);
        write(HOST_IDTR_BASE, h.idtr_base);
        write(HOST_IA32_SYSENTER_CS, h.sysenter[0]);
        write(HOST_IA32_SYSENTER_ESP, h.sysenter[1]);
        write(HOST_IA32_SYSENTER_EIP, h.sysenter[2]);
        write(HOST_IA32_EFER, h.efer);
        write(HOST_IA32_PAT, h.pat);
        write(HOST_RIP, insn::host_rip());
    }

    /// The guest-state area: a 64-bit ring-0 guest with the host's control registers,
    /// segments (flat, from the host's GDT), descriptor tables, EFER and PAT, starting at the
    /// trampoline with RDI = `arg`, RSI = `rip` on a fresh stack (§27.3.1 checks).
    pub fn setup_guest(&mut self, rip: u64, arg: u64) {
        let h = self.host;
        write(GUEST_CR0, h.cr0);
        write(GUEST_CR3, h.cr3);
        write(GUEST_CR4, h.cr4);
        write(GUEST_DR7, 0x400);
        let [cs, ss, ds, es, fs, gs, tr] = h.selectors;
        write(GUEST_CS_SELECTOR, u64::from(cs));
        write(GUEST_CS_BASE, 0);
        write(GUEST_CS_LIMIT, 0xFFFF_FFFF);
        write(GUEST_CS_ACCESS_RIGHTS, AR_CODE64);
        for (sel_f, base_f, limit_f, ar_f, sel, base) in [
            (
                GUEST_SS_SELECTOR,
                GUEST_SS_BASE,
                GUEST_SS_LIMIT,
                GUEST_SS_ACCESS_RIGHTS,
                ss,
                0,
            ),
            (
                GUEST_DS_SELECTOR,
                GUEST_DS_BASE,
                GUEST_DS_LIMIT,
                GUEST_DS_ACCESS_RIGHTS,
                ds,
                0,
            ),
            (
                GUEST_ES_SELECTOR,
                GUEST_ES_BASE,
                GUEST_ES_LIMIT,
                GUEST_ES_ACCESS_RIGHTS,
                es,
                0,
            ),
            (
                GUEST_FS_SELECTOR,
                GUEST_FS_BASE,
                GUEST_FS_LIMIT,
                GUEST_FS_ACCESS_RIGHTS,
                fs,
                h.fs_base,
            ),
            (
                GUEST_GS_SELECTOR,
                GUEST_GS_BASE,
                GUEST_GS_LIMIT,
                GUEST_GS_ACCESS_RIGHTS,
                gs,
                h.gs_base,
            ),
        ] {
            write(sel_f, u64::from(sel));
            write(base_f, base);
            write(limit_f, 0xFFFF_FFFF);
            // A null selector in FS/GS/DS/ES is an unusable segment.
            write(
                ar_f,
                if sel == 0 && sel_f != GUEST_SS_SELECTOR {
                    AR_UNUSABLE
                } else {
                    AR_DATA
                },
            );
        }
        write(GUEST_TR_SELECTOR, u64::from(tr));
        write(GUEST_TR_BASE, h.tr_base);
        write(GUEST_TR_LIMIT, 0x67);
        write(GUEST_TR_ACCESS_RIGHTS, AR_TSS_BUSY);
        write(GUEST_LDTR_SELECTOR, 0);
        write(GUEST_LDTR_BASE, 0);
        write(GUEST_LDTR_LIMIT, 0);
        write(GUEST_LDTR_ACCESS_RIGHTS, AR_UNUSABLE);
        write(GUEST_GDTR_BASE, h.gdtr_base);
        write(GUEST_GDTR_LIMIT, u64::from(h.gdtr_limit));
        write(GUEST_IDTR_BASE, h.idtr_base);
        write(GUEST_IDTR_LIMIT, u64::from(h.idtr_limit));
        write(GUEST_IA32_EFER, h.efer);
        write(GUEST_IA32_PAT, h.pat);
        write(GUEST_IA32_DEBUGCTL, 0);
        write(GUEST_IA32_SYSENTER_CS, 0);
        write(GUEST_IA32_SYSENTER_ESP, 0);
        write(GUEST_IA32_SYSENTER_EIP, 0);
        write(VMCS_LINK_POINTER, u64::MAX);
        write(GUEST_INTERRUPTIBILITY_STATE, 0);
        write(GUEST_ACTIVITY_STATE, 0);
        write(GUEST_PENDING_DEBUG_EXCEPTIONS, 0);
        write(GUEST_RFLAGS, 0x2);
        write(GUEST_RSP, guest_stack());
        write(GUEST_RIP, insn::guest_entry());
        self.regs = GuestRegs {
            rdi: arg,
            rsi: rip,
            ..GuestRegs::default()
        };
        self.launched = false;
    }

    /// Makes this VMCS current.
    pub fn load(&self) {
        assert!(vmptrld(self.vmcs) == Outcome::Succeed, "VMPTRLD");
    }

    /// VMLAUNCH (first time, or after a failed entry) or VMRESUME: the exit, or the outcome
    /// of a failed instruction.
    pub fn run(&mut self) -> Result<Exit, Outcome> {
        // SAFETY: the guest runs the program's own code on its own stack; the host state is
        // the program's (setup_host).
        unsafe { insn::enter(&mut self.regs, self.launched) }?;
        let exit = Exit::read();
        if exit.reason & reason::ENTRY_FAILURE == 0 {
            self.launched = true;
        }
        Ok(exit)
    }

    /// Advances the guest RIP past the instruction that caused the last exit (by the VM-exit
    /// instruction-length field, §28.2.5).
    pub fn skip(&self) {
        let len = read(VM_EXIT_INSTRUCTION_LENGTH);
        write(GUEST_RIP, read(GUEST_RIP) + len);
    }

    /// Sets bits in a 32-bit control field.
    pub fn set_bits(&self, field: u32, bits: u32) {
        write(field, read(field) | u64::from(bits));
    }

    /// Clears bits in a 32-bit control field.
    pub fn clear_bits(&self, field: u32, bits: u32) {
        write(field, read(field) & !u64::from(bits));
    }

    /// Turns on secondary controls `bits` (and "activate secondary controls").
    pub fn enable_secondary(&self, bits: u32) {
        self.set_bits(
            PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            proc::ACTIVATE_SECONDARY_CONTROLS,
        );
        self.set_bits(SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS, bits);
    }

    /// Runs until the guest function returns (VMCALL with RAX = GUEST_DONE), resuming past
    /// every exit for which `handle` returns `true`; returns the first exit it does not handle,
    /// or the done VMCALL.
    pub fn run_until(
        &mut self,
        mut handle: impl FnMut(&mut Vm, &Exit) -> bool,
    ) -> Result<Exit, Outcome> {
        loop {
            let exit = self.run()?;
            if self.is_done(&exit) || !handle(self, &exit) {
                return Ok(exit);
            }
        }
    }

    /// Whether `exit` is the trampoline's final VMCALL.
    pub fn is_done(&self, exit: &Exit) -> bool {
        exit.reason == reason::VMCALL && self.regs.rax == insn::GUEST_DONE
    }
}
