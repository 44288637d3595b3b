//! Unit tests of [`crate::vm::Vm`] on [`MockHost`] (issue 6): exact exit sequences, and
//! exactly what the hypervisor wrote to the VMCS, the guest's registers, its EPT tables and
//! the platform at each VM entry. Every value asserted is one the SDM (Vol. 3C chapters
//! 25-29) or the documented contract of `vm.rs` / `docs/hv.md` prescribes.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use devices::debug_exit::ExitRequest;
use x86::Hpa;
use x86::msr::{
    IA32_VMX_BASIC, IA32_VMX_MISC, IA32_VMX_PROCBASED_CTLS2, IA32_VMX_TRUE_ENTRY_CTLS,
    IA32_VMX_TRUE_EXIT_CTLS, IA32_VMX_TRUE_PINBASED_CTLS, IA32_VMX_TRUE_PROCBASED_CTLS,
};
use x86::vmx::VmcsField as F;
use x86::vmx::controls::{primary_proc, secondary_proc};

use crate::memory::{PhysMemory, VecMemory};
use crate::mock::{MockHost, Op, ScriptedExit};
use crate::vm::{Ending, HvError, Vm, VmConfig};
use crate::vmx::VmxError;

/// Register indices (SDM order).
const RAX: usize = 0;
const RCX: usize = 1;
const RDX: usize = 2;
const RBX: usize = 3;
const RSI: usize = 6;
const R15: usize = 15;

/// Guest RAM: 3 MiB (not a multiple of 2 MiB, so its last 1 MiB takes 4-KiB pages) at
/// host-physical 2 MiB (so that a guest-physical address used as host-physical shows).
const RAM_BASE: u64 = 0x20_0000;
const RAM: u64 = 0x30_0000;
/// The hypervisor's frames: host-physical 6 MiB to 8 MiB, above guest RAM.
const FRAMES: core::ops::Range<u64> = 0x600..0x800;
const ENTRY: u32 = 0x10_0000;
const INFO: u32 = 0x9500;
const VPID: u16 = 3;

/// Must-be-1 bits (the low halves of the TRUE capability MSRs) as a Skylake reports them.
const PIN_MUST: u32 = 0x16;
const PRIMARY_MUST: u32 = 0x0400_6172;
const EXIT_MUST: u32 = 0x0003_6dfb;
const ENTRY_MUST: u32 = 0x0000_11fb;
/// IA32_VMX_BASIC: revision 0x12, 4-KiB regions, write-back, TRUE MSRs (bit 55).
const BASIC: u64 = (1 << 55) | (6 << 50) | (0x1000 << 32) | 0x12;
/// IA32_VMX_MISC: preemption-timer rate 5 (bits 4:0), HLT activity state (bit 6).
const MISC: u64 = (1 << 6) | 5;

const HOST_STATE: [(F, u64); 3] = [
    (F::HostRip, 0xffff_8000_0010_2000),
    (F::HostRsp, 0xffff_8000_0020_0000),
    (F::HostCr3, 0x7000),
];

/// A capability MSR that requires `must` and allows everything.
fn allow_all(must: u32) -> u64 {
    (0xffff_ffff << 32) | u64::from(must)
}

fn machine() -> MockHost {
    let mut h = MockHost::new(VecMemory::new(8 << 20, FRAMES));
    h.vmx.capabilities = BTreeMap::from([
        (IA32_VMX_BASIC, BASIC),
        (IA32_VMX_MISC, MISC),
        (IA32_VMX_TRUE_PINBASED_CTLS, allow_all(PIN_MUST)),
        (IA32_VMX_TRUE_PROCBASED_CTLS, allow_all(PRIMARY_MUST)),
        (IA32_VMX_PROCBASED_CTLS2, allow_all(0)),
        (IA32_VMX_TRUE_EXIT_CTLS, allow_all(EXIT_MUST)),
        (IA32_VMX_TRUE_ENTRY_CTLS, allow_all(ENTRY_MUST)),
    ]);
    h.host_state = HOST_STATE.to_vec();
    h
}

fn config() -> VmConfig {
    VmConfig {
        ram: RAM,
        ram_base: Hpa::new(RAM_BASE),
        entry: ENTRY,
        multiboot_info: INFO,
        vpid: VPID,
        mmu: crate::vm::Mmu::Ept,
    }
}

fn vm(h: &mut MockHost) -> Vm {
    Vm::new(h, config()).unwrap()
}

/// An exit of basic reason `reason` with the fields and registers given.
fn exit(reason: u64, fields: &[(F, u64)], regs: &[(usize, u64)]) -> ScriptedExit {
    let mut all = vec![(F::ExitReason, reason)];
    all.extend_from_slice(fields);
    ScriptedExit {
        fields: all,
        regs: regs.to_vec(),
        tsc: None,
    }
}

/// I/O qualification (SDM Table 28-5): size - 1 in bits 2:0, IN in bit 3, string in bit 4,
/// REP in bit 5, immediate operand in bit 6, the port in bits 31:16.
fn io_q(port: u16, size: u64, input: bool) -> u64 {
    (u64::from(port) << 16) | (size - 1) | (u64::from(input) << 3)
}

/// `out 0xf4, al` (E6 F4) at `rip` with AL = `al`: the debug-exit port ends the run.
fn debug_exit(rip: u64, rax: u64) -> ScriptedExit {
    exit(
        30,
        &[
            (F::ExitQualification, io_q(0xf4, 1, false) | 1 << 6),
            (F::VmExitInstructionLength, 2),
            (F::GuestRip, rip),
        ],
        &[(RAX, rax)],
    )
}

/// Runs the script to its end, which must be `out 0xf4, al` with AL = 0x5a.
fn run_to_debug_exit(h: &mut MockHost, v: &mut Vm, mut script: Vec<ScriptedExit>) {
    script.push(debug_exit(0x10_0ffe, 0x5a));
    h.vmx.script.extend(script);
    assert_eq!(v.run(h), Ok(Ending::DebugExit(ExitRequest { value: 0x5a })));
    assert!(h.vmx.script.is_empty());
}

/// An EPT violation at `gpa` by the instruction at `rip` (data write: qualification bit 1),
/// with an instruction-length field the hypervisor must not use (EPT violations leave it
/// undefined, SDM §28.2.5).
fn ept_violation(gpa: u64, rip: u64, regs: &[(usize, u64)]) -> ScriptedExit {
    exit(
        48,
        &[
            (F::ExitQualification, 0x2),
            (F::GuestPhysicalAddress, gpa),
            (F::VmExitInstructionLength, 7),
            (F::GuestRip, rip),
        ],
        regs,
    )
}

/// Bit `msr` of the MSR bitmap at `bitmap` for reads or writes (SDM §25.6.9: read-low,
/// read-high, write-low, write-high, 1 KiB each).
fn intercepted(mem: &mut VecMemory, bitmap: u64, msr: u32, write: bool) -> bool {
    let high = match msr {
        0..=0x1fff => 0,
        0xc000_0000..=0xc000_1fff => 1024,
        _ => panic!("MSR {msr:#x} is outside the bitmap"),
    };
    let at = bitmap + high + if write { 2048 } else { 0 } + u64::from(msr & 0x1fff) / 8;
    let mut b = [0u8];
    mem.read(Hpa::new(at), &mut b).unwrap();
    b[0] >> (msr % 8) & 1 == 1
}

#[test]
fn new_writes_adjusted_controls_entry_state_host_state_and_msr_bitmap() {
    let mut h = machine();
    let mut v = vm(&mut h);
    let vmcs = v.vmcs_region();
    assert!(
        (0x60_0000..0x80_0000).contains(&vmcs.raw()),
        "a frame of the hypervisor's"
    );
    // The VMCS region starts with the revision identifier of IA32_VMX_BASIC (§25.2).
    let mut rev = [0u8; 4];
    h.mem.read(vmcs, &mut rev).unwrap();
    assert_eq!(u32::from_le_bytes(rev), 0x12);
    assert_eq!(&h.vmx.log[..2], &[Op::Vmclear(vmcs), Op::Vmptrld(vmcs)]);
    let f = |h: &MockHost, field| h.vmx.field(vmcs, field);
    // want | must-be-1 of each capability MSR.
    // Pin: external-interrupt exiting (bit 0), preemption timer (bit 6) | 0x16.
    assert_eq!(f(&h, F::PinBasedControls), 0x57);
    // Primary: HLT (7), unconditional I/O (24), MSR bitmaps (28), secondary (31).
    assert_eq!(f(&h, F::PrimaryProcBasedControls), 0x9500_61f2);
    // Secondary: EPT (1), RDTSCP (3), VPID (5), unrestricted guest (7), INVPCID (12).
    assert_eq!(f(&h, F::SecondaryProcBasedControls), 0x10aa);
    // Exit: host address-space size (9), acknowledge interrupt on exit (15), save/load PAT
    // (18, 19), save/load EFER (20, 21).
    assert_eq!(f(&h, F::PrimaryVmExitControls), 0x003f_effb);
    // Entry: load PAT (14), load EFER (15); not IA-32e mode guest.
    assert_eq!(f(&h, F::VmEntryControls), 0xd1fb);
    assert_eq!(f(&h, F::Vpid), u64::from(VPID));
    assert_eq!(f(&h, F::VmcsLinkPointer), u64::MAX);
    // EPTP: write-back (6), 4-level walk (3 << 3), a root in the hypervisor's frames.
    let eptp = f(&h, F::EptPointer);
    assert_eq!(eptp & 0xfff, 0x1e);
    assert!((0x60_0000..0x80_0000).contains(&(eptp & !0xfff)));
    // The multiboot entry state: 32-bit protected mode, paging off (Multiboot §3.2).
    assert_eq!(f(&h, F::GuestRip), u64::from(ENTRY));
    assert_eq!(f(&h, F::GuestCr0), 0x31, "PE | ET | NE");
    assert_eq!(f(&h, F::GuestCr4), 0x2000, "VMXE");
    assert_eq!(f(&h, F::Cr4ReadShadow), 0, "the guest reads VMXE as 0");
    assert_eq!(f(&h, F::GuestRflags), 0x2);
    assert_eq!(f(&h, F::GuestCsAccessRights), 0xc09b);
    assert_eq!(f(&h, F::GuestCsLimit), 0xffff_ffff);
    assert_eq!(f(&h, F::GuestDsAccessRights), 0xc093);
    assert_eq!(f(&h, F::GuestTrAccessRights), 0x8b);
    assert_eq!(f(&h, F::GuestLdtrAccessRights), 0x1_0000, "unusable");
    for (field, value) in HOST_STATE {
        assert_eq!(f(&h, field), value, "{field:?} from the platform");
    }
    // The MSR bitmap: IA32_APIC_BASE, IA32_FEATURE_CONTROL, TSC deadline, the VMX capability
    // MSRs and x2APIC for reads and writes; IA32_EFER and the TSC not.
    let bitmap = f(&h, F::MsrBitmaps);
    assert!((0x60_0000..0x80_0000).contains(&bitmap));
    for msr in [0x1b, 0x3a, 0x6e0, 0x480, 0x48b, 0x491, 0x800, 0x830, 0x8ff] {
        for write in [false, true] {
            assert!(
                intercepted(&mut h.mem, bitmap, msr, write),
                "{msr:#x} {write}"
            );
        }
    }
    for msr in [0x10, 0x1a, 0x1c, 0x277, 0x47f, 0x7ff, 0x900, 0xc000_0080] {
        for write in [false, true] {
            assert!(
                !intercepted(&mut h.mem, bitmap, msr, write),
                "{msr:#x} {write}"
            );
        }
    }
    // The first entry is a VMLAUNCH with EAX = the multiboot magic and EBX = the info.
    run_to_debug_exit(&mut h, &mut v, vec![]);
    let first = &h.vmx.entries[0];
    assert_eq!(
        (first.regs.gpr[RAX], first.regs.gpr[RBX]),
        (0x2bad_b002, u64::from(INFO))
    );
    assert_eq!(first.field(F::GuestRip), u64::from(ENTRY));
    let runs: Vec<&Op> = h
        .vmx
        .log
        .iter()
        .filter(|o| matches!(o, Op::Run(_)))
        .collect();
    assert_eq!(runs, [&Op::Run(true)]);
}

/// "the VMX capability MSRs" (docs/hv.md, vm.rs) are all of IA32_VMX_BASIC ..
/// IA32_VMX_EXIT_CTLS2 (x86::msr::IA32_VMX_CAPABILITIES, SDM Vol. 3D Appendix A); vm.rs
/// intercepts 0x480..=0x491 only, so RDMSR of IA32_VMX_PROCBASED_CTLS3 (0x492) and
/// IA32_VMX_EXIT_CTLS2 (0x493) reach the processor's values.
#[test]
fn every_vmx_capability_msr_is_intercepted() {
    let mut h = machine();
    let v = vm(&mut h);
    let bitmap = h.vmx.field(v.vmcs_region(), F::MsrBitmaps);
    for msr in x86::msr::IA32_VMX_CAPABILITIES {
        assert!(intercepted(&mut h.mem, bitmap, msr, false), "{msr:#x}");
    }
}

#[test]
fn new_refuses_controls_the_processor_does_not_allow() {
    // No unrestricted guest (secondary bit 7).
    let mut h = machine();
    h.vmx.capabilities.insert(
        IA32_VMX_PROCBASED_CTLS2,
        u64::from(!secondary_proc::UNRESTRICTED_GUEST) << 32,
    );
    assert_eq!(
        Vm::new(&mut h, config()).unwrap_err(),
        HvError::Vmx(VmxError::Backend(String::from(
            "the processor lacks VMX control bits 0x80 (capability MSR 0x48b)"
        )))
    );
    // No HLT exiting nor unconditional I/O exiting (primary bits 7 and 24).
    let mut h = machine();
    let may = !(primary_proc::HLT_EXITING | primary_proc::UNCONDITIONAL_IO_EXITING);
    h.vmx.capabilities.insert(
        IA32_VMX_TRUE_PROCBASED_CTLS,
        (u64::from(may) << 32) | u64::from(PRIMARY_MUST),
    );
    assert_eq!(
        Vm::new(&mut h, config()).unwrap_err(),
        HvError::Vmx(VmxError::Backend(String::from(
            "the processor lacks VMX control bits 0x1000080 (capability MSR 0x48e)"
        )))
    );
}

#[test]
fn cpuid_hides_vmx_x2apic_and_tsc_deadline_and_skips_the_instruction() {
    let mut h = machine();
    // Leaf 1 with VMX (5), x2APIC (21), TSC deadline (24) set and bit 31 clear.
    h.cpuid
        .insert((1, 0), [0x0009_06ea, 0x0010_0800, 0x7ffa_f3bf, 0xbfeb_fbff]);
    h.cpuid.insert((7, 0), [0, 0x029c_67af, 0, 0]);
    h.cpuid.insert((7, 1), [0x11, 0x22, 0x33, 0x44]);
    let mut v = vm(&mut h);
    let cpuid = |rip: u64, rax: u64, rcx: u64| {
        exit(
            10,
            &[(F::VmExitInstructionLength, 2), (F::GuestRip, rip)],
            &[
                (RAX, rax),
                (RCX, rcx),
                (RDX, 0xdddd),
                (RBX, 0xbbbb),
                (RSI, 0x5151),
                (R15, 0xf0f0_f0f0_f0f0_f0f0),
            ],
        )
    };
    run_to_debug_exit(
        &mut h,
        &mut v,
        vec![
            cpuid(0x10_0010, 1, 0xffff_0000),
            // Sub-leaf from ECX; the upper halves of RAX and RCX are not part of it.
            cpuid(0x10_0020, 0xffff_ffff_0000_0007, 0xffff_ffff_0000_0001),
        ],
    );
    let e = &h.vmx.entries[1];
    assert_eq!(e.field(F::GuestRip), 0x10_0012);
    let mut want = [0u64; 16];
    want[RAX] = 0x0009_06ea;
    want[RBX] = 0x0010_0800;
    // ECX & !(1 << 5 | 1 << 21 | 1 << 24) | 1 << 31.
    want[RCX] = 0xfeda_f39f;
    want[RDX] = 0xbfeb_fbff;
    want[RSI] = 0x5151;
    want[R15] = 0xf0f0_f0f0_f0f0_f0f0;
    assert_eq!(e.regs.gpr, want);
    let e = &h.vmx.entries[2];
    assert_eq!(e.field(F::GuestRip), 0x10_0022);
    assert_eq!(
        [
            e.regs.gpr[RAX],
            e.regs.gpr[RBX],
            e.regs.gpr[RCX],
            e.regs.gpr[RDX]
        ],
        [0x11, 0x22, 0x33, 0x44],
        "other leaves pass through, by sub-leaf"
    );
    assert_eq!(v.counters().exits.get(&10), Some(&2));
}

#[test]
fn port_io_console_unknown_ports_and_debug_exit() {
    let mut h = machine();
    let mut v = vm(&mut h);
    // out dx, al (EE) with DX = 0x3f8.
    let out = |rip: u64, byte: u64| {
        exit(
            30,
            &[
                (F::ExitQualification, io_q(0x3f8, 1, false)),
                (F::VmExitInstructionLength, 1),
                (F::GuestRip, rip),
            ],
            &[(RAX, 0xffff_ff00 | byte), (RDX, 0x3f8)],
        )
    };
    h.vmx.script.extend([
        out(0x10_0100, u64::from(b'o')),
        out(0x10_0101, u64::from(b'k')),
        out(0x10_0102, u64::from(b'\n')),
        // in al, dx (EC) from 0x1234: nothing there.
        exit(
            30,
            &[
                (F::ExitQualification, io_q(0x1234, 1, true)),
                (F::VmExitInstructionLength, 1),
                (F::GuestRip, 0x10_0103),
            ],
            &[(RAX, 0x1122_3344_5566_7788), (RDX, 0x1234)],
        ),
        // in ax, 0x80 (66 E5 80): 16 bits.
        exit(
            30,
            &[
                (F::ExitQualification, io_q(0x80, 2, true) | 1 << 6),
                (F::VmExitInstructionLength, 3),
                (F::GuestRip, 0x10_0104),
            ],
            &[(RAX, 0x1122_3344_5566_7788)],
        ),
        // out 0xf4, al with more in RAX than AL: the value is the byte written.
        debug_exit(0x10_0107, 0xdead_be31),
    ]);
    assert_eq!(
        v.run(&mut h),
        Ok(Ending::DebugExit(ExitRequest { value: 0x31 }))
    );
    assert_eq!(h.console, b"ok\n");
    let e = &h.vmx.entries;
    assert_eq!(e.len(), 6);
    for (i, rip) in [0x10_0101, 0x10_0102, 0x10_0103, 0x10_0104, 0x10_0107]
        .into_iter()
        .enumerate()
    {
        assert_eq!(e[i + 1].field(F::GuestRip), rip, "after exit {i}");
    }
    assert_eq!(e[4].regs.gpr[RAX], 0x1122_3344_5566_77ff, "AL only");
    assert_eq!(e[5].regs.gpr[RAX], 0x1122_3344_5566_ffff, "AX only");
    assert_eq!(v.counters().io, 6);

    // rep outsb (F3 6E) to COM1: string I/O is not implemented, and says so.
    let mut h = machine();
    let mut v = vm(&mut h);
    h.vmx.script.push_back(exit(
        30,
        &[
            (
                F::ExitQualification,
                io_q(0x3f8, 1, false) | 1 << 4 | 1 << 5,
            ),
            (F::VmExitInstructionLength, 2),
            (F::GuestLinearAddress, 0x8000),
        ],
        &[(RSI, 0x8000), (RCX, 5)],
    ));
    assert_eq!(
        v.run(&mut h),
        Ok(Ending::Unsupported(String::from("string I/O (port 0x3f8)")))
    );
    assert!(h.console.is_empty());
}

/// `in eax, dx` in 64-bit mode writes EAX, and a 32-bit register write there zero-extends
/// into RAX (SDM Vol. 1 §3.4.1.1): RAX = 0x00000000_ffffffff from a port with nothing.
#[test]
fn in_eax_in_64_bit_mode_zero_extends() {
    let mut h = machine();
    let mut v = vm(&mut h);
    run_to_debug_exit(
        &mut h,
        &mut v,
        vec![exit(
            30,
            &[
                (F::ExitQualification, io_q(0x1234, 4, true)),
                (F::VmExitInstructionLength, 1),
                (F::GuestIa32Efer, 0x500),
                (F::GuestCsAccessRights, 0xa09b),
            ],
            &[(RAX, 0x1122_3344_5566_7788), (RDX, 0x1234)],
        )],
    );
    assert_eq!(h.vmx.entries[1].regs.gpr[RAX], 0xffff_ffff);
}

/// The EPT leaf that maps `gpa`: (level, entry), reading the tables in host memory
/// (SDM §29.3.2).
fn ept_leaf(mem: &mut VecMemory, eptp: u64, gpa: u64) -> Option<(u32, u64)> {
    let mut table = eptp & 0x000f_ffff_ffff_f000;
    for level in (1..=4u32).rev() {
        let index = (gpa >> (12 + 9 * (level - 1))) & 0x1ff;
        let e = mem.read_u64(Hpa::new(table + index * 8)).unwrap();
        if e & 7 == 0 {
            return None;
        }
        if level == 1 || e & 0x80 != 0 {
            return Some((level, e));
        }
        table = e & 0x000f_ffff_ffff_f000;
    }
    None
}

#[test]
fn ept_violations_in_ram_map_2_mib_pages_and_4_kib_at_its_end() {
    let mut h = machine();
    let mut v = vm(&mut h);
    run_to_debug_exit(
        &mut h,
        &mut v,
        vec![
            ept_violation(0x12_3456, 0x10_0040, &[]),
            ept_violation(0x2f_f123, 0x10_0040, &[]),
        ],
    );
    let eptp = h.vmx.field(v.vmcs_region(), F::EptPointer);
    // A 2-MiB leaf (bit 7) at RAM_BASE: RWX, write-back (6 << 3).
    assert_eq!(
        ept_leaf(&mut h.mem, eptp, 0x12_3456),
        Some((2, RAM_BASE | 0xb7))
    );
    assert_eq!(
        ept_leaf(&mut h.mem, eptp, 0x1f_ffff),
        Some((2, RAM_BASE | 0xb7))
    );
    // [2 MiB, 4 MiB) is not all RAM (3 MiB): the 4-KiB page alone.
    assert_eq!(
        ept_leaf(&mut h.mem, eptp, 0x2f_f000),
        Some((1, (RAM_BASE + 0x2f_f000) | 0x37))
    );
    assert_eq!(ept_leaf(&mut h.mem, eptp, 0x2f_e000), None);
    assert_eq!(ept_leaf(&mut h.mem, eptp, 0x30_0000), None);
    // The guest resumes at the instruction that faulted, which runs again.
    assert_eq!(h.vmx.entries[1].field(F::GuestRip), 0x10_0040);
    assert_eq!(h.vmx.entries[2].field(F::GuestRip), 0x10_0040);
    assert_eq!(v.counters().ept_maps, 2);
}

/// Puts `bytes` in guest RAM at guest-physical `gpa`.
fn poke(h: &mut MockHost, gpa: u64, bytes: &[u8]) {
    h.mem.write(Hpa::new(RAM_BASE + gpa), bytes).unwrap();
}

#[test]
fn mmio_to_the_apic_is_decoded_and_skipped_by_its_own_length() {
    let mut h = machine();
    // mov dword ptr [eax+0xf0], ecx (89 88 F0 00 00 00), 32-bit code.
    poke(&mut h, 0x10_0100, &[0x89, 0x88, 0xf0, 0x00, 0x00, 0x00]);
    // mov dword ptr [eax-0x10], ecx (89 48 F0).
    poke(&mut h, 0x10_0200, &[0x89, 0x48, 0xf0]);
    // mov edx, dword ptr [eax-0x10] (8B 50 F0).
    poke(&mut h, 0x10_0300, &[0x8b, 0x50, 0xf0]);
    // mov eax, dword ptr [ecx] (8B 01): memory that is not there.
    poke(&mut h, 0x10_0400, &[0x8b, 0x01]);
    let mut v = vm(&mut h);
    run_to_debug_exit(
        &mut h,
        &mut v,
        vec![
            // SVR = 0x1ff: software-enabled, spurious vector 0xff.
            ept_violation(0xfee0_00f0, 0x10_0100, &[(RAX, 0xfee0_0000), (RCX, 0x1ff)]),
            ept_violation(0xfee0_00f0, 0x10_0200, &[(RAX, 0xfee0_0100), (RCX, 0x1ff)]),
            ept_violation(0xfee0_00f0, 0x10_0300, &[(RAX, 0xfee0_0100), (RDX, 0)]),
            ept_violation(0xc000_0000, 0x10_0400, &[(RAX, 0x1234), (RCX, 0xc000_0000)]),
        ],
    );
    let e = &h.vmx.entries;
    assert_eq!(
        e[1].field(F::GuestRip),
        0x10_0106,
        "6 bytes, not the exit's 7"
    );
    assert_eq!(e[2].field(F::GuestRip), 0x10_0203);
    assert_eq!(e[3].field(F::GuestRip), 0x10_0303);
    assert_eq!(e[3].regs.gpr[RDX], 0x1ff, "the SVR as written");
    assert_eq!(e[4].field(F::GuestRip), 0x10_0402);
    assert_eq!(
        e[4].regs.gpr[RAX], 0xffff_ffff,
        "unbacked memory reads all ones"
    );
    assert_eq!(v.counters().mmio, 4);
    assert_eq!(v.counters().ept_maps, 0);
}

/// The timer vector guest-os uses.
const VECTOR: u64 = 0x30;
/// The TSC at which the initial count is written, and the deadline: 100 counts divided by 16.
const ARMED_AT: u64 = 1_000_003;
const DEADLINE: u64 = ARMED_AT + 1600;
/// `mov dword ptr [eax], ecx` (89 08) at this guest RIP does every APIC write.
const STORE_RIP: u64 = 0x10_0500;

/// The exits of guest-os's APIC timer set-up, one-shot at [`VECTOR`], armed at [`ARMED_AT`].
fn arm_timer(h: &mut MockHost) -> Vec<ScriptedExit> {
    poke(h, STORE_RIP, &[0x89, 0x08]);
    let store = |reg: u64, value: u64| {
        ept_violation(
            0xfee0_0000 + reg,
            STORE_RIP,
            &[(RAX, 0xfee0_0000 + reg), (RCX, value)],
        )
    };
    let mut count = store(0x380, 100);
    count.tsc = Some(ARMED_AT);
    vec![
        store(0xf0, 0x1ff),
        store(0x320, VECTOR),
        store(0x3e0, 0b0011),
        count,
    ]
}

const WINDOW: u64 = primary_proc::INTERRUPT_WINDOW_EXITING as u64;

#[test]
fn timer_interrupts_are_injected_when_the_guest_can_take_them() {
    let mut h = machine();
    let mut script = arm_timer(&mut h);
    // The preemption timer fires past the deadline, the guest has IF = 1.
    let mut fired = exit(
        52,
        &[(F::GuestRflags, 0x202), (F::GuestRip, 0x10_0600)],
        &[],
    );
    fired.tsc = Some(DEADLINE + 7);
    script.push(fired);
    let mut v = vm(&mut h);
    run_to_debug_exit(&mut h, &mut v, script);
    let e = &h.vmx.entries;
    assert_eq!(e.len(), 6);
    // Not armed: the largest count. Armed at ARMED_AT (1,000,000 rounded down to 32): the
    // count rounds up, ceil(1603 / 32) = 51, so that it expires at or after the deadline.
    for entry in &e[..4] {
        assert_eq!(entry.field(F::VmxPreemptionTimerValue), 0xffff_ffff);
    }
    assert_eq!(e[4].field(F::VmxPreemptionTimerValue), 51);
    assert_eq!(e[4].field(F::VmEntryInterruptionInfo) >> 31, 0);
    // Due: external interrupt (type 0) of the timer's vector, valid.
    assert_eq!(e[5].field(F::VmEntryInterruptionInfo), 0x8000_0000 | VECTOR);
    assert_eq!(
        e[5].field(F::GuestRip),
        0x10_0600,
        "delivered at the interrupted RIP"
    );
    assert_eq!(e[5].field(F::PrimaryProcBasedControls) & WINDOW, 0);
    assert_eq!(
        e[5].field(F::VmxPreemptionTimerValue),
        0xffff_ffff,
        "one-shot, done"
    );
    assert_eq!(v.counters().injected, 1);
}

#[test]
fn a_blocked_timer_interrupt_waits_for_an_interrupt_window() {
    let mut h = machine();
    let mut script = arm_timer(&mut h);
    // IF = 0 at the deadline: interrupt-window exiting, no injection.
    let mut fired = exit(52, &[(F::GuestRflags, 0x2)], &[]);
    fired.tsc = Some(DEADLINE);
    script.push(fired);
    // IF = 1 but blocking by STI: still a window.
    script.push(exit(
        52,
        &[(F::GuestRflags, 0x202), (F::GuestInterruptibilityState, 1)],
        &[],
    ));
    // The window opens.
    script.push(exit(
        7,
        &[(F::GuestRflags, 0x202), (F::GuestInterruptibilityState, 0)],
        &[],
    ));
    let mut v = vm(&mut h);
    run_to_debug_exit(&mut h, &mut v, script);
    let e = &h.vmx.entries;
    assert_eq!(e.len(), 8);
    for entry in &e[5..7] {
        assert_eq!(entry.field(F::VmEntryInterruptionInfo) >> 31, 0);
        assert_eq!(entry.field(F::PrimaryProcBasedControls) & WINDOW, WINDOW);
    }
    assert_eq!(e[7].field(F::VmEntryInterruptionInfo), 0x8000_0000 | VECTOR);
    assert_eq!(e[7].field(F::PrimaryProcBasedControls) & WINDOW, 0);
    assert_eq!(v.counters().injected, 1);
}

#[test]
fn msrs_apic_base_reserved_bits_and_feature_control() {
    let mut h = machine();
    let mut v = vm(&mut h);
    let msr = |write: bool, rip: u64, rcx: u64, rdx: u64, rax: u64| {
        exit(
            if write { 32 } else { 31 },
            &[(F::VmExitInstructionLength, 2), (F::GuestRip, rip)],
            &[(RCX, rcx), (RDX, rdx), (RAX, rax)],
        )
    };
    let junk = 0xa5a5_a5a5_a5a5_a5a5;
    run_to_debug_exit(
        &mut h,
        &mut v,
        vec![
            msr(false, 0x10_0700, 0x1b, junk, junk),
            // Bit 9 of IA32_APIC_BASE is reserved (SDM Vol. 3A §11.4.4).
            msr(true, 0x10_0710, 0x1b, 0, 0xfee0_0b00),
            msr(false, 0x10_0720, 0x3a, junk, junk),
            // IA32_VMX_BASIC: VMX is not offered, so #GP.
            msr(false, 0x10_0730, 0x480, junk, junk),
        ],
    );
    let e = &h.vmx.entries;
    // EDX:EAX = 0xfee00000 | EN (11) | BSP (8).
    assert_eq!((e[1].regs.gpr[RDX], e[1].regs.gpr[RAX]), (0, 0xfee0_0900));
    assert_eq!(e[1].field(F::GuestRip), 0x10_0702);
    // #GP(0): vector 13, hardware exception (3), error code valid, at the WRMSR.
    assert_eq!(e[2].field(F::VmEntryInterruptionInfo), 0x8000_0b0d);
    assert_eq!(e[2].field(F::VmEntryExceptionErrorCode), 0);
    assert_eq!(e[2].field(F::GuestRip), 0x10_0710);
    // IA32_FEATURE_CONTROL: locked, VMX off.
    assert_eq!((e[3].regs.gpr[RDX], e[3].regs.gpr[RAX]), (0, 1));
    assert_eq!(e[3].field(F::GuestRip), 0x10_0722);
    assert_eq!(e[3].field(F::VmEntryInterruptionInfo) >> 31, 0);
    assert_eq!(e[4].field(F::VmEntryInterruptionInfo), 0x8000_0b0d);
    assert_eq!(e[4].field(F::GuestRip), 0x10_0730);
    assert_eq!(e[4].regs.gpr[RAX], junk, "a faulting RDMSR writes nothing");
}

#[test]
fn hlt_idles_to_the_timer_or_ends_the_run() {
    let mut h = machine();
    let mut script = arm_timer(&mut h);
    let mut hlt = exit(
        12,
        &[
            (F::VmExitInstructionLength, 1),
            (F::GuestRip, 0x10_0800),
            (F::GuestRflags, 0x202),
        ],
        &[],
    );
    hlt.tsc = Some(ARMED_AT + 500);
    script.push(hlt);
    let mut v = vm(&mut h);
    run_to_debug_exit(&mut h, &mut v, script);
    assert_eq!(h.idled, [DEADLINE]);
    let e = &h.vmx.entries[5];
    assert_eq!(e.tsc, DEADLINE);
    assert_eq!(e.field(F::GuestRip), 0x10_0801);
    assert_eq!(e.field(F::VmEntryInterruptionInfo), 0x8000_0000 | VECTOR);

    // IF = 0 and nothing armed: only an NMI, SMI or INIT could wake it.
    let mut h = machine();
    let mut v = vm(&mut h);
    h.vmx.script.push_back(exit(
        12,
        &[(F::VmExitInstructionLength, 1), (F::GuestRflags, 0x2)],
        &[],
    ));
    assert_eq!(v.run(&mut h), Ok(Ending::HaltedForever));
    assert!(h.idled.is_empty());
}

#[test]
fn triple_faults_entry_failures_and_unknown_reasons_end_the_run() {
    let mut h = machine();
    let mut v = vm(&mut h);
    h.vmx.script.push_back(exit(2, &[], &[]));
    assert_eq!(v.run(&mut h), Ok(Ending::TripleFault));

    let mut h = machine();
    let mut v = vm(&mut h);
    h.vmx.script.push_back(exit(0x8000_0021, &[], &[]));
    assert_eq!(
        v.run(&mut h),
        Ok(Ending::Unsupported(String::from(
            "VM entry failed: exit reason 33 qualification 0"
        )))
    );

    let mut h = machine();
    let mut v = vm(&mut h);
    h.vmx.script.push_back(exit(0x7fff, &[], &[]));
    assert_eq!(
        v.run(&mut h),
        Ok(Ending::Unsupported(String::from(
            "an exit this hypervisor does not handle: Unknown { reason: 32767, qualification: 0 } \
             at guest RIP 0x100000"
        )))
    );
    assert_eq!(v.counters().exits.get(&0x7fff), Some(&1));
}

/// A timer interrupt that comes due at an entry that already injects an event (here the #GP
/// of a WRMSR) cannot be injected then; docs/hv.md: "injected when the guest can take them
/// (an interrupt window otherwise)". That entry must ask for an interrupt window (the window
/// exit comes once the #GP handler IRETs), or the one-shot interrupt waits for whatever exit
/// comes next: the preemption timer is set to its largest count, the deadline being past.
#[test]
fn an_interrupt_due_while_an_exception_is_injected_asks_for_a_window() {
    let mut h = machine();
    let mut script = arm_timer(&mut h);
    let mut wrmsr = exit(
        32,
        &[
            (F::VmExitInstructionLength, 2),
            (F::GuestRip, 0x10_0900),
            (F::GuestRflags, 0x202),
        ],
        &[(RCX, 0x1b), (RDX, 0), (RAX, 0xfee0_0b00)],
    );
    wrmsr.tsc = Some(DEADLINE);
    script.push(wrmsr);
    let mut v = vm(&mut h);
    run_to_debug_exit(&mut h, &mut v, script);
    let e = &h.vmx.entries[5];
    assert_eq!(e.field(F::VmEntryInterruptionInfo), 0x8000_0b0d);
    assert_eq!(e.field(F::PrimaryProcBasedControls) & WINDOW, WINDOW);
}

/// The APIC's register page decodes wherever IA32_APIC_BASE puts it, RAM or not (SDM Vol. 3A
/// §11.4.5), and vlapic.rs asks its caller to compare `mmio_base` around a WRMSR and update
/// EPT. Moved into guest RAM, a store there must reach the APIC (decoded, RIP += 2), not map
/// RAM and re-run the store against memory.
#[test]
fn an_apic_page_moved_into_ram_still_decodes() {
    let mut h = machine();
    poke(&mut h, 0x10_0a00, &[0x89, 0x08]); // mov dword ptr [eax], ecx
    let mut v = vm(&mut h);
    run_to_debug_exit(
        &mut h,
        &mut v,
        vec![
            // Base 0x100000, globally enabled (bit 11).
            exit(
                32,
                &[(F::VmExitInstructionLength, 2), (F::GuestRip, 0x10_0900)],
                &[(RCX, 0x1b), (RDX, 0), (RAX, 0x0010_0800)],
            ),
            ept_violation(0x10_00f0, 0x10_0a00, &[(RAX, 0x10_00f0), (RCX, 0x1ff)]),
        ],
    );
    assert_eq!(h.vmx.entries[1].field(F::GuestRip), 0x10_0902);
    assert_eq!(h.vmx.entries[2].field(F::GuestRip), 0x10_0a02);
    assert_eq!(v.counters().mmio, 1);
    assert_eq!(v.counters().ept_maps, 0);
}

/// An MMIO instruction in the last bytes of guest RAM is whole and the processor ran it; the
/// hypervisor's fetch of up to 15 bytes must not fail on the bytes after it. Here guest RAM
/// ends where host memory ends.
#[test]
fn an_mmio_instruction_at_the_end_of_ram_is_emulated() {
    // The hypervisor's frames below guest RAM; guest RAM up to the end of host memory.
    let mut h = MockHost::new(VecMemory::new((RAM_BASE + RAM) as usize, 0x100..0x200));
    h.vmx.capabilities = machine().vmx.capabilities;
    poke(&mut h, RAM - 2, &[0x89, 0x08]); // mov dword ptr [eax], ecx
    let mut v = vm(&mut h);
    run_to_debug_exit(
        &mut h,
        &mut v,
        vec![ept_violation(
            0xfee0_00f0,
            RAM - 2,
            &[(RAX, 0xfee0_00f0), (RCX, 0x1ff)],
        )],
    );
    assert_eq!(h.vmx.entries[1].field(F::GuestRip), RAM);
}
