//! VM entry, non-root operation and VM exits on the software CPU: a 64-bit host that
//! launches a 64-bit guest in the same address space (the shape of kvm-unit-tests' vmx.c).

use x86::msr::feature_control;
use x86::reg::{cr0, cr4, rflags};
use x86::vmx::controls::{entry, exit, pin_based, primary_proc as pp, secondary_proc as sp};
use x86::vmx::{ExitReason, VmInstructionError, VmcsField as F};

use crate::Cpu;
use crate::error::StopReason;
use crate::state::Seg;
use crate::test_utils::{CODE, KCODE64, KDATA, TestBus, install_tables, long_mode, set_gate64};
use crate::vmx::capabilities::{MODEL, REVISION_ID};

const VMXON: u64 = 0x20_0000;
const VMCS: u64 = 0x20_1000;
const POINTERS: u64 = 0x20_8000;
/// Host landing point: HLT.
const HOST_RIP: u64 = 0x30_0000;
const HOST_RSP: u64 = 0x31_0000;
/// Guest code and stack.
const GUEST_RIP: u64 = 0x40_0000;
const GUEST_RSP: u64 = 0x41_0000;

/// vmxon [rax]; vmptrld [rbx]; vmlaunch; (host, after a failed VMLAUNCH) hlt.
const LAUNCH: &[u8] = &[
    0xf3, 0x0f, 0xc7, 0x30, // vmxon [rax]
    0x0f, 0xc7, 0x33, // vmptrld [rbx]
    0x0f, 0x01, 0xc2, // vmlaunch
    0xf4, // hlt
];

/// A host ready to VMLAUNCH a guest running `guest` (bytes at GUEST_RIP), with `edit`
/// applied to the VMCS after the standard setup.
fn setup(guest: &[u8], edit: impl FnOnce(&mut crate::vmx::vmcs::Vmcs)) -> (Cpu, TestBus) {
    let mut bus = TestBus::new();
    bus.load(CODE, LAUNCH);
    bus.load(HOST_RIP, &[0xf4]);
    bus.load(GUEST_RIP, guest);
    let mut cpu = long_mode(&mut bus);
    cpu.seg[Seg::Cs as usize].selector = KCODE64;
    install_tables(&mut cpu, &mut bus);
    cpu.features.vmx = true;
    cpu.cr0 |= cr0::NE;
    cpu.cr4 |= cr4::VMXE;
    cpu.msr.feature_control = feature_control::LOCK | feature_control::VMX_OUTSIDE_SMX;
    for region in [VMXON, VMCS] {
        bus.load(region, &REVISION_ID.to_le_bytes());
    }
    bus.write_u64(POINTERS, VMXON);
    bus.write_u64(POINTERS + 8, VMCS);
    cpu.gpr[0] = POINTERS;
    cpu.gpr[3] = POINTERS + 8;
    // Run VMXON and VMPTRLD, then fill the current VMCS as a hypervisor's VMWRITEs would.
    assert_eq!(cpu.run(&mut bus, 2), Ok(StopReason::BudgetExhausted));
    let state = cpu.clone_state();
    let v = cpu.vmx.vmcs_mut().expect("a current VMCS");
    standard_vmcs(v, &state);
    edit(v);
    (cpu, bus)
}

/// The register state a VMCS is built from.
struct State {
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    gdt: (u64, u16),
    idt: (u64, u16),
    tr: crate::Segment,
}

impl Cpu {
    fn clone_state(&self) -> State {
        State {
            cr0: self.cr0,
            cr3: self.cr3,
            cr4: self.cr4,
            efer: self.efer,
            gdt: (self.gdtr.base, self.gdtr.limit),
            idt: (self.idtr.base, self.idtr.limit),
            tr: self.tr,
        }
    }
}

/// Controls at their minimum, host = the current state landing at HOST_RIP, guest = the
/// same flat 64-bit state at GUEST_RIP.
fn standard_vmcs(v: &mut crate::vmx::vmcs::Vmcs, s: &State) {
    let caps = &MODEL.caps;
    v.set(F::PinBasedControls, u64::from(caps.pin_based.allowed0));
    v.set(
        F::PrimaryProcBasedControls,
        u64::from(caps.primary_proc.allowed0),
    );
    v.set(
        F::PrimaryVmExitControls,
        u64::from(caps.exit.allowed0 | exit::HOST_ADDRESS_SPACE_SIZE),
    );
    v.set(
        F::VmEntryControls,
        u64::from(caps.entry.allowed0 | entry::IA32E_MODE_GUEST),
    );
    v.set(F::VmcsLinkPointer, u64::MAX);
    v.set(F::HostCr0, s.cr0);
    v.set(F::HostCr3, s.cr3);
    v.set(F::HostCr4, s.cr4);
    v.set(F::HostCsSelector, u64::from(KCODE64));
    for f in [F::HostSsSelector, F::HostDsSelector, F::HostEsSelector] {
        v.set(f, u64::from(KDATA));
    }
    v.set(F::HostTrSelector, u64::from(s.tr.selector));
    v.set(F::HostTrBase, s.tr.base);
    v.set(F::HostGdtrBase, s.gdt.0);
    v.set(F::HostIdtrBase, s.idt.0);
    v.set(F::HostRip, HOST_RIP);
    v.set(F::HostRsp, HOST_RSP);
    v.set(F::GuestCr0, s.cr0);
    v.set(F::GuestCr3, s.cr3);
    v.set(F::GuestCr4, s.cr4);
    v.set(F::GuestIa32Efer, s.efer);
    v.set(F::GuestDr7, 0x400);
    for (seg, f) in super::SEGMENT_FIELDS {
        let (sel, ar) = if seg == Seg::Cs {
            (KCODE64, 0xa09b)
        } else {
            (KDATA, 0xc093)
        };
        v.set(f.selector, u64::from(sel));
        v.set(f.limit, 0xffff_ffff);
        v.set(f.access_rights, ar);
    }
    v.set(F::GuestLdtrAccessRights, 0x1_0000);
    v.set(F::GuestTrSelector, u64::from(s.tr.selector));
    v.set(F::GuestTrBase, s.tr.base);
    v.set(F::GuestTrLimit, 0x67);
    v.set(F::GuestTrAccessRights, 0x8b);
    v.set(F::GuestGdtrBase, s.gdt.0);
    v.set(F::GuestGdtrLimit, u64::from(s.gdt.1));
    v.set(F::GuestIdtrBase, s.idt.0);
    v.set(F::GuestIdtrLimit, u64::from(s.idt.1));
    v.set(F::GuestRip, GUEST_RIP);
    v.set(F::GuestRsp, GUEST_RSP);
    v.set(F::GuestRflags, 2);
}

/// Runs to the host's HLT.
fn run(cpu: &mut Cpu, bus: &mut TestBus) {
    assert_eq!(
        cpu.run(bus, 10_000),
        Ok(StopReason::Halted),
        "rip {:#x}",
        cpu.rip
    );
}

fn field(cpu: &Cpu, f: F) -> u64 {
    cpu.vmx.field(f)
}

#[test]
fn cpuid_exits_and_the_host_state_is_loaded() {
    // Guest: mov eax, 7; cpuid.
    let (mut cpu, mut bus) = setup(&[0xb8, 7, 0, 0, 0, 0x0f, 0xa2], |_| {});
    run(&mut cpu, &mut bus);
    assert!(!cpu.vmx.non_root);
    assert_eq!(cpu.rip, HOST_RIP + 1, "halted at the host landing point");
    assert_eq!(cpu.gpr[4], HOST_RSP);
    assert_eq!(field(&cpu, F::ExitReason), ExitReason::Cpuid as u64);
    assert_eq!(field(&cpu, F::GuestRip), GUEST_RIP + 5);
    assert_eq!(field(&cpu, F::VmExitInstructionLength), 2);
    assert_eq!(cpu.gpr[0], 7, "GPRs are not switched");
    assert_eq!(cpu.gdtr.limit, 0xffff, "§28.5.2: GDTR limit");
    assert_eq!(cpu.tr.limit, 0x67);
    assert_eq!(cpu.flags.bits(), rflags::FIXED1);
    assert_eq!(
        cpu.vmx.vmcs().map(|v| v.launch_state()),
        Some(crate::vmx::vmcs::LaunchState::Launched)
    );
}

#[test]
fn bad_controls_fail_valid_7_and_bad_host_state_8() {
    let (mut cpu, mut bus) = setup(&[0xf4], |v| v.set(F::PinBasedControls, 0));
    run(&mut cpu, &mut bus);
    assert_eq!(cpu.rip, CODE + 11, "VMLAUNCH fell through");
    assert_eq!(cpu.flags.bits() & rflags::ZF, rflags::ZF);
    assert_eq!(
        field(&cpu, F::VmInstructionError),
        VmInstructionError::EntryInvalidControlFields as u64
    );
    let failure = cpu.last_vm_entry_failure().expect("the failed rule");
    assert_eq!(failure.field, F::PinBasedControls);
    let (mut cpu, mut bus) = setup(&[0xf4], |v| v.set(F::HostCr4, 0));
    run(&mut cpu, &mut bus);
    assert_eq!(
        field(&cpu, F::VmInstructionError),
        VmInstructionError::EntryInvalidHostStateFields as u64
    );
}

#[test]
fn bad_guest_state_is_an_entry_failure_exit() {
    let (mut cpu, mut bus) = setup(&[0xf4], |v| v.set(F::GuestRflags, 0));
    run(&mut cpu, &mut bus);
    assert_eq!(cpu.rip, HOST_RIP + 1);
    assert_eq!(field(&cpu, F::ExitReason), (1 << 31) | 33);
    assert_eq!(field(&cpu, F::ExitQualification), 0);
    assert_eq!(
        cpu.vmx.vmcs().map(|v| v.launch_state()),
        Some(crate::vmx::vmcs::LaunchState::Clear),
        "a failed entry does not launch"
    );
}

#[test]
fn msr_load_failure_reports_the_entry() {
    let list = 0x22_0000u64;
    let (mut cpu, mut bus) = setup(&[0xf4], |v| {
        v.set(F::VmEntryMsrLoadAddress, list);
        v.set(F::VmEntryMsrLoadCount, 2);
    });
    // Entry 1: IA32_SYSENTER_CS (fine); entry 2: IA32_FS_BASE (refused, §27.4).
    bus.write_u64(list, 0x174);
    bus.write_u64(list + 8, 0x1234);
    bus.write_u64(list + 16, 0xc000_0100);
    run(&mut cpu, &mut bus);
    assert_eq!(field(&cpu, F::ExitReason), (1 << 31) | 34);
    assert_eq!(field(&cpu, F::ExitQualification), 2);
}

#[test]
fn msr_load_list_outside_ram_fails_at_its_first_entry() {
    let (mut cpu, mut bus) = setup(&[0xf4], |v| {
        v.set(F::VmEntryMsrLoadAddress, 0x40_0000_0000);
        v.set(F::VmEntryMsrLoadCount, 1);
    });
    run(&mut cpu, &mut bus);
    assert_eq!(field(&cpu, F::ExitReason), (1 << 31) | 34);
    assert_eq!(field(&cpu, F::ExitQualification), 1);
}

#[test]
fn hlt_exiting_and_vmresume_continue_the_guest() {
    // Guest: hlt; mov eax, 0x55; vmcall.  Host: skip the HLT, vmresume, hlt.
    let (mut cpu, mut bus) = setup(&[0xf4, 0xb8, 0x55, 0, 0, 0, 0x0f, 0x01, 0xc1], |v| {
        let p = v.get(F::PrimaryProcBasedControls);
        v.set(F::PrimaryProcBasedControls, p | u64::from(pp::HLT_EXITING));
    });
    run(&mut cpu, &mut bus);
    assert_eq!(field(&cpu, F::ExitReason), ExitReason::Hlt as u64);
    assert_eq!(field(&cpu, F::GuestRip), GUEST_RIP);
    // The host advances the guest RIP by the instruction length and resumes.
    let len = field(&cpu, F::VmExitInstructionLength);
    if let Some(v) = cpu.vmx.vmcs_mut() {
        v.set(F::GuestRip, GUEST_RIP + len);
    }
    bus.load(HOST_RIP + 0x10, &[0x0f, 0x01, 0xc3]); // vmresume
    cpu.flush_decode_cache();
    cpu.rip = HOST_RIP + 0x10;
    cpu.halted = false;
    run(&mut cpu, &mut bus);
    assert_eq!(field(&cpu, F::ExitReason), ExitReason::Vmcall as u64);
    assert_eq!(cpu.gpr[0] & 0xff, 0x55);
}

#[test]
fn exception_bitmap_turns_ud_into_an_exit_and_others_are_delivered() {
    // Guest: ud2.
    let (mut cpu, mut bus) = setup(&[0x0f, 0x0b], |v| v.set(F::ExceptionBitmap, 1 << 6));
    run(&mut cpu, &mut bus);
    assert_eq!(
        field(&cpu, F::ExitReason),
        ExitReason::ExceptionOrNmi as u64
    );
    assert_eq!(field(&cpu, F::VmExitInterruptionInfo), 0x8000_0306);
    assert_eq!(
        field(&cpu, F::GuestRip),
        GUEST_RIP,
        "a fault saves the faulting RIP"
    );
    // Without the bit, #UD goes through the guest IDT: a handler that does VMCALL.
    let (mut cpu, mut bus) = setup(&[0x0f, 0x0b], |_| {});
    bus.load(0x40_1000, &[0x0f, 0x01, 0xc1]);
    set_gate64(&mut bus, 6, 0x40_1000, false, 0, 0);
    run(&mut cpu, &mut bus);
    assert_eq!(field(&cpu, F::ExitReason), ExitReason::Vmcall as u64);
    assert_eq!(field(&cpu, F::GuestRip), 0x40_1000);
}

#[test]
fn injected_hardware_exception_reaches_the_guest_handler() {
    let (mut cpu, mut bus) = setup(&[0xf4], |v| {
        // #GP(0x18) injected.
        v.set(F::VmEntryInterruptionInfo, 0x8000_0b0d);
        v.set(F::VmEntryExceptionErrorCode, 0x18);
    });
    bus.load(0x40_1000, &[0x0f, 0x01, 0xc1]); // vmcall
    set_gate64(&mut bus, 13, 0x40_1000, false, 0, 0);
    run(&mut cpu, &mut bus);
    assert_eq!(field(&cpu, F::ExitReason), ExitReason::Vmcall as u64);
    // The handler's stack: error code, then RIP = the guest RIP at entry.
    let rsp = field(&cpu, F::GuestRsp);
    assert_eq!(bus.read_u64(rsp), 0x18);
    assert_eq!(bus.read_u64(rsp + 8), GUEST_RIP);
    assert_eq!(
        field(&cpu, F::VmEntryInterruptionInfo) >> 31,
        0,
        "VM exits clear the valid bit"
    );
}

#[test]
fn preemption_timer_zero_exits_before_the_first_instruction() {
    let (mut cpu, mut bus) = setup(&[0x90, 0xf4], |v| {
        let pin = v.get(F::PinBasedControls);
        v.set(
            F::PinBasedControls,
            pin | u64::from(pin_based::ACTIVATE_PREEMPTION_TIMER),
        );
        v.set(F::VmxPreemptionTimerValue, 0);
    });
    run(&mut cpu, &mut bus);
    assert_eq!(
        field(&cpu, F::ExitReason),
        ExitReason::PreemptionTimer as u64
    );
    assert_eq!(field(&cpu, F::GuestRip), GUEST_RIP);
}

#[test]
fn preemption_timer_counts_retired_instructions_at_the_tsc_rate() {
    // A guest spinning forever: jmp $.
    let (mut cpu, mut bus) = setup(&[0xeb, 0xfe], |v| {
        let pin = v.get(F::PinBasedControls);
        v.set(
            F::PinBasedControls,
            pin | u64::from(pin_based::ACTIVATE_PREEMPTION_TIMER),
        );
        let exit = v.get(F::PrimaryVmExitControls);
        v.set(
            F::PrimaryVmExitControls,
            exit | u64::from(exit::SAVE_PREEMPTION_TIMER),
        );
        v.set(F::VmxPreemptionTimerValue, 10);
    });
    let before = cpu.instructions_retired();
    run(&mut cpu, &mut bus);
    let spent = cpu.instructions_retired() - before;
    assert_eq!(
        field(&cpu, F::ExitReason),
        ExitReason::PreemptionTimer as u64
    );
    // 10 ticks of the timer are 320 TSC cycles, one per retired instruction.
    assert!((300..=360).contains(&spent), "{spent} instructions");
    assert_eq!(field(&cpu, F::VmxPreemptionTimerValue), 0);
}

#[test]
fn cr0_guest_host_mask_and_read_shadow() {
    // Guest: mov rax, cr0; mov cr0, rax (unchanged masked bits: no exit); vmcall.
    let (mut cpu, mut bus) = setup(
        &[0x0f, 0x20, 0xc0, 0x0f, 0x22, 0xc0, 0x0f, 0x01, 0xc1],
        |v| {
            v.set(F::Cr0GuestHostMask, cr0::NE | cr0::TS);
            v.set(F::Cr0ReadShadow, cr0::TS);
        },
    );
    run(&mut cpu, &mut bus);
    assert_eq!(field(&cpu, F::ExitReason), ExitReason::Vmcall as u64);
    assert_eq!(
        cpu.gpr[0] & (cr0::NE | cr0::TS),
        cr0::TS,
        "masked bits read the shadow"
    );
    // Writing a value that differs from the shadow in a masked bit exits (reason 28).
    let (mut cpu, mut bus) = setup(&[0x0f, 0x22, 0xc0], |v| {
        v.set(F::Cr0GuestHostMask, cr0::TS);
        v.set(F::Cr0ReadShadow, 0);
    });
    cpu.gpr[0] = cpu.cr0 | cr0::TS;
    run(&mut cpu, &mut bus);
    assert_eq!(field(&cpu, F::ExitReason), ExitReason::CrAccess as u64);
    assert_eq!(field(&cpu, F::ExitQualification), 0, "MOV to CR0 from RAX");
}

#[test]
fn io_bitmaps_choose_which_ports_exit() {
    let bitmap_a = 0x23_0000u64;
    // Guest: out 0x80, al (bit clear: no exit); out 0x81, al (bit set: exit).
    let (mut cpu, mut bus) = setup(&[0xe6, 0x80, 0xe6, 0x81], |v| {
        let p = v.get(F::PrimaryProcBasedControls);
        v.set(
            F::PrimaryProcBasedControls,
            p | u64::from(pp::USE_IO_BITMAPS),
        );
        v.set(F::IoBitmapA, bitmap_a);
        v.set(F::IoBitmapB, bitmap_a + 0x1000);
    });
    bus.load(bitmap_a + 0x10, &[0x02]);
    run(&mut cpu, &mut bus);
    assert_eq!(field(&cpu, F::ExitReason), ExitReason::IoInstruction as u64);
    assert_eq!(field(&cpu, F::ExitQualification), (0x81 << 16) | (1 << 6));
    assert_eq!(bus.port_writes, vec![(0x80, 0)]);
}

#[test]
fn vmread_in_the_guest_reads_the_shadow_vmcs() {
    let shadow = 0x24_0000u64;
    let bitmaps = 0x25_0000u64;
    // Guest: mov ecx, 0x4402 (exit reason); vmread rax, rcx; vmcall.
    let (mut cpu, mut bus) = setup(
        &[0xb9, 0x02, 0x44, 0, 0, 0x0f, 0x78, 0xc8, 0x0f, 0x01, 0xc1],
        |v| {
            let p = v.get(F::PrimaryProcBasedControls);
            v.set(
                F::PrimaryProcBasedControls,
                p | u64::from(pp::ACTIVATE_SECONDARY_CONTROLS),
            );
            v.set(F::SecondaryProcBasedControls, u64::from(sp::VMCS_SHADOWING));
            v.set(F::VmcsLinkPointer, shadow);
            v.set(F::VmreadBitmapAddress, bitmaps);
            v.set(F::VmwriteBitmapAddress, bitmaps + 0x1000);
        },
    );
    let mut s = crate::vmx::vmcs::Vmcs::new(REVISION_ID);
    s.set_shadow(true);
    s.set(F::ExitReason, 0x1234);
    bus.load(shadow, &s.to_bytes());
    run(&mut cpu, &mut bus);
    assert_eq!(field(&cpu, F::ExitReason), ExitReason::Vmcall as u64);
    assert_eq!(cpu.gpr[0], 0x1234);
    // With the field's bit set, VMREAD exits (reason 23) with the instruction information.
    let (mut cpu, mut bus) = setup(&[0xb9, 0x02, 0x44, 0, 0, 0x0f, 0x78, 0xc8], |v| {
        let p = v.get(F::PrimaryProcBasedControls);
        v.set(
            F::PrimaryProcBasedControls,
            p | u64::from(pp::ACTIVATE_SECONDARY_CONTROLS),
        );
        v.set(F::SecondaryProcBasedControls, u64::from(sp::VMCS_SHADOWING));
        v.set(F::VmcsLinkPointer, shadow);
        v.set(F::VmreadBitmapAddress, bitmaps);
    });
    bus.load(bitmaps + 0x4402 / 8, &[1 << (0x4402 % 8)]);
    bus.load(shadow, &s.to_bytes());
    run(&mut cpu, &mut bus);
    assert_eq!(field(&cpu, F::ExitReason), ExitReason::Vmread as u64);
    // Register form: bit 10, reg1 = RAX (0), reg2 = RCX (1), 64-bit address size.
    assert_eq!(
        field(&cpu, F::VmExitInstructionInfo),
        (1 << 28) | (1 << 10) | (2 << 7)
    );
}

mod random {
    use super::*;
    use crate::error::CpuError;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
        /// Guest-controlled VMCS contents never panic or hang the model (issue 5, "Bad
        /// input"): a valid VMCS with random fields overwritten by random values (or single
        /// bits flipped), entered with VMLAUNCH, runs random guest code for a bounded number
        /// of steps and ends in an architectural outcome or a named model error.
        #[test]
        fn random_vmcs_contents_through_vm_entry(
            edits in proptest::collection::vec(
                (0..F::ALL.len(), any::<u64>(), any::<bool>()),
                1..8,
            ),
            guest in proptest::collection::vec(any::<u8>(), 1..64),
        ) {
            let (mut cpu, mut bus) = setup(&guest, |v| {
                for &(i, value, flip) in &edits {
                    let f = F::ALL[i];
                    let old = v.get(f);
                    v.set(f, if flip { old ^ (1 << (value % 64)) } else { value });
                }
            });
            let before = std::time::Instant::now();
            match cpu.run(&mut bus, 2_000) {
                Ok(_) => {}
                Err(CpuError::Unimplemented { mnemonic, .. }) => prop_assert!(!mnemonic.is_empty()),
                Err(CpuError::Unsupported { what, .. }) => prop_assert!(!what.is_empty()),
            }
            prop_assert!(before.elapsed().as_secs() < 5);
            // Whatever happened, a VM exit or a failed entry left the processor in root
            // operation with the host state, or it is still running the guest.
            if !cpu.vmx.non_root {
                prop_assert!(cpu.vmx.vmcs().is_some());
            }
        }
    }
}

/// The native API: the program owning the CPU is the VMX root software; the guest runs until
/// its VM exit, which returns to the caller.
#[test]
fn native_root_operation_runs_a_guest_until_its_exit() {
    use crate::{NATIVE_HOST, NativeRun, VmFail};
    let mut bus = TestBus::new();
    // Guest: cpuid; mov eax, 0x77; hlt (with HLT exiting).
    bus.load(GUEST_RIP, &[0x0f, 0xa2, 0xb8, 0x77, 0, 0, 0, 0xf4]);
    let mut guest_env = long_mode(&mut bus);
    install_tables(&mut guest_env, &mut bus);
    guest_env.cr0 |= cr0::NE;
    guest_env.cr4 |= cr4::VMXE;
    let state = guest_env.clone_state();
    for region in [VMXON, VMCS] {
        bus.load(region, &REVISION_ID.to_le_bytes());
    }
    let mut cpu = Cpu::with_features(crate::CpuFeatures { vmx: true });
    assert_eq!(cpu.native_vmxon(&mut bus, VMXON), Ok(Ok(())));
    assert!(cpu.is_native_root());
    // A VMCS that is not 4-KiB aligned: VMfailValid(9), as VMPTRLD gives.
    assert_eq!(
        cpu.native_vmptrld(&mut bus, VMCS + 8),
        Ok(Err(VmFail::Valid(
            VmInstructionError::VmptrldInvalidAddress
        )))
    );
    assert_eq!(cpu.native_vmptrld(&mut bus, VMCS), Ok(Ok(())));
    if let Some(v) = cpu.vmx.vmcs_mut() {
        standard_vmcs(v, &state);
    }
    for (f, value) in NATIVE_HOST {
        assert_eq!(cpu.native_vmwrite(f, value), Ok(()));
    }
    let p = cpu.native_vmread(F::PrimaryProcBasedControls).unwrap_or(0);
    assert_eq!(
        cpu.native_vmwrite(F::PrimaryProcBasedControls, p | u64::from(pp::HLT_EXITING)),
        Ok(())
    );
    assert_eq!(
        cpu.native_vmwrite(F::ExitReason, 0),
        Err(VmFail::Valid(VmInstructionError::VmwriteReadOnlyComponent))
    );
    assert_eq!(cpu.native_run(&mut bus, true, 1000), Ok(NativeRun::Exited));
    assert_eq!(
        cpu.native_vmread(F::ExitReason),
        Ok(ExitReason::Cpuid as u64)
    );
    // The handler skips the instruction and resumes; VMLAUNCH again is error 4.
    assert_eq!(
        cpu.native_run(&mut bus, true, 1000),
        Ok(NativeRun::Failed(VmFail::Valid(
            VmInstructionError::VmlaunchNonClearVmcs
        )))
    );
    let len = cpu.native_vmread(F::VmExitInstructionLength).unwrap_or(0);
    assert_eq!(cpu.native_vmwrite(F::GuestRip, GUEST_RIP + len), Ok(()));
    assert_eq!(cpu.native_run(&mut bus, false, 1000), Ok(NativeRun::Exited));
    assert_eq!(cpu.native_vmread(F::ExitReason), Ok(ExitReason::Hlt as u64));
    assert_eq!(cpu.gpr[0], 0x77);
    // A budget smaller than the guest's work stops with the guest still running.
    if let Some(v) = cpu.vmx.vmcs_mut() {
        v.set(F::GuestRip, GUEST_RIP + 2);
        v.set(F::PrimaryProcBasedControls, p);
    }
    bus.load(GUEST_RIP + 2, &[0xeb, 0xfe]); // jmp $
    cpu.flush_decode_cache();
    assert_eq!(
        cpu.native_run(&mut bus, false, 50),
        Ok(NativeRun::Stopped(StopReason::BudgetExhausted))
    );
    assert!(cpu.vmx.non_root);
}

#[test]
fn pause_exits_inside_a_run_of_simple_instructions() {
    // Guest: mov eax, 1; add eax, 2; pause.
    let (mut cpu, mut bus) = setup(&[0xb8, 1, 0, 0, 0, 0x83, 0xc0, 0x02, 0xf3, 0x90], |v| {
        let p = v.get(F::PrimaryProcBasedControls);
        v.set(
            F::PrimaryProcBasedControls,
            p | u64::from(pp::PAUSE_EXITING),
        );
    });
    run(&mut cpu, &mut bus);
    assert_eq!(field(&cpu, F::ExitReason), ExitReason::Pause as u64);
    assert_eq!(field(&cpu, F::GuestRip), GUEST_RIP + 8);
    assert_eq!(field(&cpu, F::VmExitInstructionLength), 2);
    assert_eq!(cpu.gpr[0], 3);
}
