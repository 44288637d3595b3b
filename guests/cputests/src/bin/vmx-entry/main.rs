//! vmx-entry: the checks VMLAUNCH makes before it enters a guest and what a failed entry
//! leaves behind (SDM Vol. 3C ch. 27 "VM Entries": §27.2.1 checks on VMX controls →
//! VMfailValid(7); §27.2.2–27.2.4 checks on the host-state area → VMfailValid(8); §27.3.1
//! checks on the guest-state area and §27.4 MSR loading → a VM-entry failure exit, §27.8:
//! exit reason 33 or 34 with bit 31 set, the exit qualification of Table 27-... (0 for most
//! guest-state checks, 4 for the VMCS link pointer, the 1-based index of the failing entry for
//! MSR loading), host state loaded as on a VM exit; §28.5 loading host state).
//!
//! Each case starts from the standard VMCS of [`cputests::vmx::Vm`] (which enters and exits
//! cleanly: the first case checks that) and changes one field.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use cputests::out;
use cputests::paging::{alloc_frame, virt};
use cputests::report::Report;
use cputests::vmx::AR_CODE64;
use cputests::vmx::fields::*;
use cputests::vmx::insn::{self, LANDED_RFLAGS, LANDED_RSP, Outcome};
use cputests::vmx::{
    self, Caps, IA32_TSC_AUX, Vm, entry, exit, pin, proc, proc2, read, reason, write,
};
use rt::BootInfo;
use rt::arch::{rdmsr, wrmsr};

/// What the guest of the good entry writes.
static GUEST_MARK: AtomicU64 = AtomicU64::new(0);

extern "C" fn guest_mark(arg: u64) {
    GUEST_MARK.store(arg, Ordering::Relaxed);
}

/// A standard VM whose guest writes `arg` to [`GUEST_MARK`].
fn fresh(caps: &Caps) -> Vm {
    Vm::new(caps, guest_mark, 0x5151)
}

/// A case whose entry must fail with VMfailValid(`want`) (7: controls, 8: host state).
fn fail_valid(r: &mut Report, caps: &Caps, name: &str, want: u32, change: impl FnOnce(&Vm)) {
    let mut vm = fresh(caps);
    change(&vm);
    match vm.run() {
        Err(o) => {
            out!(r, "{name}: {o}");
            r.expect_eq(format_args!("{name}: {o}"), o.code(), u64::from(want));
        }
        Ok(e) => {
            out!(r, "{name}: entered, exit reason {:#x}", e.reason);
            r.check(
                format_args!(
                    "{name}: entered (exit {:#x}), want VMfailValid({want})",
                    e.reason
                ),
                false,
            );
        }
    }
}

/// A case whose entry must fail with a VM-entry failure exit of `basic` reason and
/// qualification `qual`, host state loaded (RSP = HOST_RSP at HOST_RIP, RFLAGS = 2) and the
/// VMCS still clear (VMRESUME → error 5).
fn entry_failure(
    r: &mut Report,
    caps: &Caps,
    name: &str,
    basic: u32,
    qual: u64,
    change: impl FnOnce(&Vm),
) {
    let mut vm = fresh(caps);
    change(&vm);
    match vm.run() {
        Ok(e) => {
            out!(
                r,
                "{name}: exit reason={:#x} qualification={:#x}",
                e.reason,
                e.qualification
            );
            r.expect_eq(
                format_args!("{name} exit reason"),
                u64::from(e.reason),
                u64::from(basic | reason::ENTRY_FAILURE),
            );
            r.expect_eq(
                format_args!("{name} exit qualification"),
                e.qualification,
                qual,
            );
            r.expect_eq(
                format_args!("{name} RSP at host RIP"),
                LANDED_RSP.load(Ordering::Relaxed),
                read(HOST_RSP),
            );
            r.expect_eq(
                format_args!("{name} RFLAGS at host RIP"),
                LANDED_RFLAGS.load(Ordering::Relaxed),
                2,
            );
            // SAFETY: the failed entry left the VMCS clear: VMRESUME fails before any entry.
            let o = unsafe { insn::enter(&mut vm.regs, true) }
                .err()
                .unwrap_or(Outcome::Succeed);
            r.expect_eq(
                format_args!("{name} VMRESUME after failed entry: {o}"),
                o.code(),
                5,
            );
        }
        Err(o) => {
            out!(r, "{name}: {o}");
            r.check(
                format_args!("{name}: {o}, want a VM-entry failure exit"),
                false,
            );
        }
    }
}

/// A case whose entry must succeed: the guest runs to its end (the trampoline's VMCALL).
fn enters(r: &mut Report, caps: &Caps, name: &str, change: impl FnOnce(&Vm)) {
    let mut vm = fresh(caps);
    change(&vm);
    match vm.run() {
        Ok(e) => {
            out!(r, "{name}: exit reason={:#x}", e.reason);
            r.check(
                format_args!("{name}: entered and ran to the end (exit {:#x})", e.reason),
                vm.is_done(&e),
            );
        }
        Err(o) => {
            out!(r, "{name}: {o}");
            r.check(format_args!("{name}: {o}, want a VM entry"), false);
        }
    }
}

fn set(field: u32, bits: u64) {
    write(field, read(field) | bits);
}

fn clear(field: u32, bits: u64) {
    write(field, read(field) & !bits);
}

/// An MSR list of `entries` (index, reserved, data) in a fresh frame: its physical address.
fn msr_list(entries: &[(u32, u32, u64)]) -> u64 {
    let pa = alloc_frame();
    for (i, &(index, reserved, data)) in entries.iter().enumerate() {
        // SAFETY: a fresh pool frame; 16 bytes per entry, at most 256 entries fit.
        unsafe {
            virt(pa)
                .add(2 * i)
                .write_volatile(u64::from(index) | u64::from(reserved) << 32);
            virt(pa).add(2 * i + 1).write_volatile(data);
        }
    }
    pa
}

/// Bits in control MSR `msr`'s allowed-1 half that are 0: a bit no control may set, or 0.
fn unsupported_bit(msr: u64) -> u32 {
    let allowed1 = (msr >> 32) as u32;
    (0..32)
        .map(|b| 1u32 << b)
        .find(|b| allowed1 & b == 0)
        .unwrap_or(0)
}

/// A bit the allowed-0 half requires: a control that must be 1, or 0.
fn required_bit(msr: u64) -> u32 {
    let allowed0 = msr as u32;
    (0..32)
        .map(|b| 1u32 << b)
        .find(|b| allowed0 & b != 0)
        .unwrap_or(0)
}

#[unsafe(no_mangle)]
fn kernel_main(_boot: &'static BootInfo) -> ! {
    cputests::init();
    let mut r = Report::new("vmx-entry");
    let (caps, _vmxon_region, o) = vmx::enable();
    r.expect_eq(format_args!("VMXON: {o}"), o.code(), 0);

    // The standard VMCS enters and exits: the guest runs and VMCALLs at its end.
    // SAFETY: DR7.LE only (no breakpoint enabled); a VM exit must set DR7 to 400H (§28.5.1).
    unsafe { insn::write_dr7(0x400 | 1 << 8) };
    // SAFETY: IA32_TSC_AUX holds a value no one reads but this test.
    unsafe { wrmsr(IA32_TSC_AUX, 0x11) };
    let mut vm = fresh(&caps);
    let list = msr_list(&[(IA32_TSC_AUX, 0, 0x2222)]);
    write(VM_ENTRY_MSR_LOAD_ADDRESS, list);
    write(VM_ENTRY_MSR_LOAD_COUNT, 1);
    match vm.run() {
        Ok(e) => {
            out!(
                r,
                "good entry: exit reason={} rax=done:{}",
                e.reason,
                u8::from(vm.is_done(&e))
            );
            r.expect_eq(
                format_args!("good entry exit reason"),
                u64::from(e.reason),
                u64::from(reason::VMCALL),
            );
            r.expect_eq(
                format_args!("guest RAX at VMCALL"),
                vm.regs.rax,
                insn::GUEST_DONE,
            );
            r.expect_eq(
                format_args!("guest wrote its mark"),
                GUEST_MARK.load(Ordering::Relaxed),
                0x5151,
            );
            // SAFETY: reading an MSR.
            let aux = unsafe { rdmsr(IA32_TSC_AUX) };
            r.expect_eq(
                format_args!("VM-entry MSR load of IA32_TSC_AUX"),
                aux,
                0x2222,
            );
            r.expect_eq(
                format_args!("VMCALL instruction length"),
                u64::from(e.instruction_length),
                3,
            );
            // Host state after the exit (§28.5).
            let (gl, gb, il, ib) = insn::descriptor_tables();
            r.expect_eq(
                format_args!("host GDTR limit after exit"),
                u64::from(gl),
                0xFFFF,
            );
            r.expect_eq(
                format_args!("host IDTR limit after exit"),
                u64::from(il),
                0xFFFF,
            );
            r.expect_eq(format_args!("host GDTR base"), gb, vm.host.gdtr_base);
            r.expect_eq(format_args!("host IDTR base"), ib, vm.host.idtr_base);
            r.expect_eq(format_args!("DR7 after exit"), insn::read_dr7(), 0x400);
            r.expect_eq(
                format_args!("RFLAGS at host RIP"),
                LANDED_RFLAGS.load(Ordering::Relaxed),
                2,
            );
            r.expect_eq(
                format_args!("RSP at host RIP"),
                LANDED_RSP.load(Ordering::Relaxed),
                read(HOST_RSP),
            );
            let sel = insn::selectors();
            let mut same = 0;
            for (i, s) in sel.iter().enumerate() {
                if *s == vm.host.selectors[i] {
                    same += 1;
                }
            }
            r.expect_eq(format_args!("host selectors after exit"), same, 7);
            insn::restore_descriptor_limits(vm.host.gdtr_limit, vm.host.idtr_limit);
        }
        Err(o) => {
            out!(r, "good entry: {o}");
            r.check(format_args!("standard VMCS entry: {o}"), false);
        }
    }

    // VM-execution, exit and entry controls (§27.2.1): VMfailValid(7).
    let c = caps;
    fail_valid(&mut r, &c, "pin-based unsupported bit", 7, |_| {
        set(
            PIN_BASED_VM_EXECUTION_CONTROLS,
            u64::from(unsupported_bit(c.pin)),
        )
    });
    fail_valid(&mut r, &c, "pin-based required bit clear", 7, |_| {
        clear(
            PIN_BASED_VM_EXECUTION_CONTROLS,
            u64::from(required_bit(c.pin)),
        )
    });
    fail_valid(&mut r, &c, "primary required bit clear", 7, |_| {
        clear(
            PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            u64::from(required_bit(c.proc)),
        )
    });
    fail_valid(&mut r, &c, "primary unsupported (TPR shadow)", 7, |_| {
        set(
            PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            u64::from(proc::USE_TPR_SHADOW),
        )
    });
    fail_valid(&mut r, &c, "secondary unsupported bit", 7, |vm| {
        vm.enable_secondary(proc2::VIRTUALIZE_APIC_ACCESSES)
    });
    fail_valid(&mut r, &c, "exit-controls required bit clear", 7, |_| {
        clear(PRIMARY_VM_EXIT_CONTROLS, u64::from(required_bit(c.exit)))
    });
    fail_valid(&mut r, &c, "entry-controls unsupported bit", 7, |_| {
        set(VM_ENTRY_CONTROLS, u64::from(unsupported_bit(c.entry)))
    });
    let targets = c.cr3_targets();
    out!(r, "cr3-target values supported: {targets}");
    fail_valid(&mut r, &c, "cr3-target count above misc", 7, |_| {
        write(CR3_TARGET_COUNT, u64::from(targets) + 1)
    });
    fail_valid(&mut r, &c, "I/O bitmap A unaligned", 7, |vm| {
        vm.set_bits(
            PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            proc::USE_IO_BITMAPS,
        );
        write(IO_BITMAP_A, alloc_frame() + 0x800);
        write(IO_BITMAP_B, alloc_frame());
    });
    fail_valid(&mut r, &c, "MSR bitmap unaligned", 7, |vm| {
        vm.set_bits(
            PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
            proc::USE_MSR_BITMAPS,
        );
        write(MSR_BITMAPS, alloc_frame() + 8);
    });
    fail_valid(&mut r, &c, "virtual NMIs without NMI exiting", 7, |vm| {
        vm.set_bits(PIN_BASED_VM_EXECUTION_CONTROLS, pin::VIRTUAL_NMIS)
    });
    fail_valid(
        &mut r,
        &c,
        "save preemption timer without the timer",
        7,
        |vm| vm.set_bits(PRIMARY_VM_EXIT_CONTROLS, exit::SAVE_PREEMPTION_TIMER),
    );
    fail_valid(&mut r, &c, "EPTP memory type 7", 7, |vm| {
        vm.enable_secondary(proc2::ENABLE_EPT);
        write(EPT_POINTER, alloc_frame() | 7 | 3 << 3);
    });
    fail_valid(&mut r, &c, "EPTP page-walk length 5", 7, |vm| {
        vm.enable_secondary(proc2::ENABLE_EPT);
        write(EPT_POINTER, alloc_frame() | 6 | 4 << 3);
    });
    fail_valid(&mut r, &c, "unrestricted guest without EPT", 7, |vm| {
        vm.enable_secondary(proc2::UNRESTRICTED_GUEST)
    });
    fail_valid(&mut r, &c, "VPID 0 with enable VPID", 7, |vm| {
        vm.enable_secondary(proc2::ENABLE_VPID);
        write(VIRTUAL_PROCESSOR_ID, 0);
    });
    fail_valid(&mut r, &c, "VM-entry MSR-load address unaligned", 7, |_| {
        write(VM_ENTRY_MSR_LOAD_ADDRESS, alloc_frame() + 4);
        write(VM_ENTRY_MSR_LOAD_COUNT, 1);
    });
    fail_valid(&mut r, &c, "VM-exit MSR-store address unaligned", 7, |_| {
        write(VM_EXIT_MSR_STORE_ADDRESS, alloc_frame() + 8);
        write(VM_EXIT_MSR_STORE_COUNT, 1);
    });
    fail_valid(&mut r, &c, "VM-exit MSR-load address unaligned", 7, |_| {
        write(VM_EXIT_MSR_LOAD_ADDRESS, alloc_frame() + 8);
        write(VM_EXIT_MSR_LOAD_COUNT, 1);
    });
    fail_valid(
        &mut r,
        &c,
        "NMI-window exiting without virtual NMIs",
        7,
        |vm| {
            vm.set_bits(PIN_BASED_VM_EXECUTION_CONTROLS, pin::NMI_EXITING);
            vm.set_bits(
                PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
                proc::NMI_WINDOW_EXITING,
            );
        },
    );
    fail_valid(&mut r, &c, "VMREAD bitmap unaligned", 7, |vm| {
        vm.enable_secondary(proc2::VMCS_SHADOWING);
        write(VMREAD_BITMAP, alloc_frame() + 0x10);
        write(VMWRITE_BITMAP, alloc_frame());
    });
    // The limits are exact, and what is not active is not checked (§27.2.1.1).
    enters(&mut r, &c, "cr3-target count = IA32_VMX_MISC's", |_| {
        write(CR3_TARGET_COUNT, u64::from(targets))
    });
    enters(
        &mut r,
        &c,
        "unsupported secondary control without activate-secondary",
        |_| {
            write(
                SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
                u64::from(proc2::VIRTUALIZE_APIC_ACCESSES),
            )
        },
    );
    let revision = c.revision();
    enters(
        &mut r,
        &c,
        "VMCS link pointer to a shadow VMCS with shadowing 1",
        |vm| {
            vm.enable_secondary(proc2::VMCS_SHADOWING);
            write(VMREAD_BITMAP, alloc_frame());
            write(VMWRITE_BITMAP, alloc_frame());
            write(VMCS_LINK_POINTER, vmx::region(revision, true));
        },
    );
    // Event injection (§27.2.1.3), interruption-information format of Table 25-17.
    let valid = 1u64 << 31;
    for (name, info, len) in [
        ("inject reserved type 1", valid | 1 << 8 | 0x20, 0),
        ("inject NMI with vector 3", valid | 2 << 8 | 3, 0),
        (
            "inject hardware exception vector 32",
            valid | 3 << 8 | 32,
            0,
        ),
        (
            "inject error code with external interrupt",
            valid | 1 << 11 | 0x20,
            0,
        ),
        (
            "inject error code with #UD",
            valid | 3 << 8 | 1 << 11 | 6,
            0,
        ),
        (
            "inject reserved bits 30:12",
            valid | 1 << 12 | 3 << 8 | 6,
            0,
        ),
        (
            "inject software interrupt length 0",
            valid | 4 << 8 | 0x80,
            0,
        ),
        (
            "inject software exception length 16",
            valid | 6 << 8 | 3,
            16,
        ),
    ] {
        fail_valid(&mut r, &c, name, 7, |_| {
            write(VM_ENTRY_INTERRUPTION_INFORMATION, info);
            write(VM_ENTRY_INSTRUCTION_LENGTH, len);
        });
    }

    // Host-state area (§27.2.2–27.2.4): VMfailValid(8).
    fail_valid(&mut r, &c, "host CR0.NE clear", 8, |_| {
        clear(HOST_CR0, vmx::CR0_NE)
    });
    fail_valid(&mut r, &c, "host CR4.VMXE clear", 8, |_| {
        clear(HOST_CR4, vmx::CR4_VMXE)
    });
    fail_valid(
        &mut r,
        &c,
        "host CR3 beyond physical-address width",
        8,
        |_| set(HOST_CR3, 1 << 52),
    );
    fail_valid(&mut r, &c, "host RIP non-canonical", 8, |_| {
        write(HOST_RIP, 0x0000_8000_0000_0000)
    });
    fail_valid(&mut r, &c, "host FS base non-canonical", 8, |_| {
        write(HOST_FS_BASE, 0x0000_8000_0000_0000)
    });
    fail_valid(&mut r, &c, "host TR base non-canonical", 8, |_| {
        write(HOST_TR_BASE, 0x1234_0000_0000_0000)
    });
    fail_valid(&mut r, &c, "host CS selector 0", 8, |_| {
        write(HOST_CS_SELECTOR, 0)
    });
    fail_valid(&mut r, &c, "host TR selector 0", 8, |_| {
        write(HOST_TR_SELECTOR, 0)
    });
    fail_valid(&mut r, &c, "host TR selector TI set", 8, |_| {
        set(HOST_TR_SELECTOR, 4)
    });
    fail_valid(&mut r, &c, "host DS selector RPL 3", 8, |_| {
        set(HOST_DS_SELECTOR, 3)
    });
    fail_valid(
        &mut r,
        &c,
        "host address-space size 0 in IA-32e mode",
        8,
        |vm| {
            vm.clear_bits(
                PRIMARY_VM_EXIT_CONTROLS,
                exit::HOST_ADDRESS_SPACE_SIZE | exit::LOAD_IA32_EFER,
            )
        },
    );
    fail_valid(
        &mut r,
        &c,
        "host EFER.LMA clear with host address-space size 1",
        8,
        |_| clear(HOST_IA32_EFER, 1 << 10 | 1 << 8),
    );
    fail_valid(&mut r, &c, "host PAT memory type 2", 8, |_| {
        write(HOST_IA32_PAT, (read(HOST_IA32_PAT) & !0xFF) | 2)
    });
    fail_valid(&mut r, &c, "host GDTR base non-canonical", 8, |_| {
        write(HOST_GDTR_BASE, 0x0000_8000_0000_0000)
    });
    fail_valid(&mut r, &c, "host SYSENTER_EIP non-canonical", 8, |_| {
        write(HOST_IA32_SYSENTER_EIP, 0x0000_8000_0000_0000)
    });
    // SS may be null when the host is 64-bit (§27.2.3).
    enters(&mut r, &c, "host SS selector 0 with a 64-bit host", |_| {
        write(HOST_SS_SELECTOR, 0)
    });
    // SAFETY: the GDT's ring-0 data segment, as before the case.
    unsafe { insn::load_ss(cputests::desc::KERNEL_DS) };
    // Controls are checked before the host state (§27.2: the order of §27.2.1, §27.2.2).
    fail_valid(&mut r, &c, "bad controls and bad host state", 7, |_| {
        write(CR3_TARGET_COUNT, u64::from(targets) + 1);
        clear(HOST_CR4, vmx::CR4_VMXE);
    });

    // Guest-state area (§27.3.1): exit reason 33 | 1 << 31, qualification 0.
    let bad = reason::INVALID_GUEST_STATE;
    entry_failure(&mut r, &c, "guest CR0.NE clear", bad, 0, |_| {
        clear(GUEST_CR0, vmx::CR0_NE)
    });
    entry_failure(&mut r, &c, "guest CR4.VMXE clear", bad, 0, |_| {
        clear(GUEST_CR4, vmx::CR4_VMXE)
    });
    entry_failure(&mut r, &c, "guest RFLAGS bit 1 clear", bad, 0, |_| {
        write(GUEST_RFLAGS, 0)
    });
    entry_failure(&mut r, &c, "guest CS.L and CS.D both set", bad, 0, |_| {
        set(GUEST_CS_ACCESS_RIGHTS, 1 << 14)
    });
    entry_failure(&mut r, &c, "guest TR type 9 (not busy)", bad, 0, |_| {
        write(GUEST_TR_ACCESS_RIGHTS, 0x89)
    });
    entry_failure(&mut r, &c, "guest RIP non-canonical", bad, 0, |_| {
        write(GUEST_RIP, 0x0000_8000_0000_0000)
    });
    entry_failure(
        &mut r,
        &c,
        "guest EFER.LMA clear in IA-32e mode guest",
        bad,
        0,
        |_| clear(GUEST_IA32_EFER, 1 << 10),
    );
    entry_failure(
        &mut r,
        &c,
        "guest activity state shutdown (unsupported)",
        bad,
        0,
        |_| write(GUEST_ACTIVITY_STATE, 2),
    );
    entry_failure(
        &mut r,
        &c,
        "guest blocking by STI with IF 0",
        bad,
        0,
        |_| write(GUEST_INTERRUPTIBILITY_STATE, 1),
    );
    entry_failure(&mut r, &c, "guest PAT memory type 3", bad, 0, |_| {
        write(GUEST_IA32_PAT, (read(GUEST_IA32_PAT) & !0xFF) | 3)
    });
    entry_failure(&mut r, &c, "guest CR0 bit 32 set", bad, 0, |_| {
        set(GUEST_CR0, 1 << 32)
    });
    entry_failure(
        &mut r,
        &c,
        "guest CR4 bit not in CR4_FIXED1",
        bad,
        0,
        |_| {
            let free = (0..32)
                .map(|b| 1u64 << b)
                .find(|b| c.cr4_fixed1 & b == 0)
                .unwrap_or(1 << 63);
            set(GUEST_CR4, free)
        },
    );
    entry_failure(&mut r, &c, "guest CS type 3 (data)", bad, 0, |_| {
        write(GUEST_CS_ACCESS_RIGHTS, (AR_CODE64 & !0xF) | 3)
    });
    entry_failure(&mut r, &c, "guest SS.DPL 3 with CS.DPL 0", bad, 0, |_| {
        write(GUEST_SS_ACCESS_RIGHTS, vmx::AR_DATA | 3 << 5)
    });
    entry_failure(
        &mut r,
        &c,
        "guest DS access rights reserved bit 8",
        bad,
        0,
        |_| set(GUEST_DS_ACCESS_RIGHTS, 1 << 8),
    );
    entry_failure(&mut r, &c, "guest GDTR base non-canonical", bad, 0, |_| {
        write(GUEST_GDTR_BASE, 0x0000_8000_0000_0000)
    });
    entry_failure(
        &mut r,
        &c,
        "guest DR7 bit 32 with load debug controls",
        bad,
        0,
        |vm| {
            vm.set_bits(VM_ENTRY_CONTROLS, entry::LOAD_DEBUG_CONTROLS);
            write(GUEST_DR7, 0x400 | 1 << 32);
        },
    );
    entry_failure(
        &mut r,
        &c,
        "guest IA32_DEBUGCTL reserved bit 2 with load debug controls",
        bad,
        0,
        |vm| {
            vm.set_bits(VM_ENTRY_CONTROLS, entry::LOAD_DEBUG_CONTROLS);
            write(GUEST_DR7, 0x400);
            write(GUEST_IA32_DEBUGCTL, 1 << 2);
        },
    );
    entry_failure(
        &mut r,
        &c,
        "guest pending debug exceptions reserved bit 4",
        bad,
        0,
        |_| write(GUEST_PENDING_DEBUG_EXCEPTIONS, 1 << 4),
    );
    entry_failure(
        &mut r,
        &c,
        "guest blocking by STI and by MOV SS",
        bad,
        0,
        |_| {
            write(GUEST_RFLAGS, 0x202);
            write(GUEST_INTERRUPTIBILITY_STATE, 3);
        },
    );
    entry_failure(
        &mut r,
        &c,
        "guest interruptibility reserved bit 5",
        bad,
        0,
        |_| write(GUEST_INTERRUPTIBILITY_STATE, 1 << 5),
    );
    entry_failure(
        &mut r,
        &c,
        "external interrupt injected with blocking by STI",
        bad,
        0,
        |_| {
            write(GUEST_RFLAGS, 0x202);
            write(GUEST_INTERRUPTIBILITY_STATE, 1);
            write(VM_ENTRY_INTERRUPTION_INFORMATION, 1 << 31 | 0x80);
        },
    );
    // The VMCS link pointer (§27.3.1.5): not FFFFFFFF_FFFFFFFFH and not a valid region.
    entry_failure(&mut r, &c, "VMCS link pointer unaligned", bad, 4, |_| {
        write(VMCS_LINK_POINTER, alloc_frame() + 8)
    });
    entry_failure(
        &mut r,
        &c,
        "VMCS link pointer wrong revision",
        bad,
        4,
        |_| write(VMCS_LINK_POINTER, vmx::region(revision ^ 1, false)),
    );
    // Bit 31 of the linked region must equal the "VMCS shadowing" control.
    entry_failure(
        &mut r,
        &c,
        "VMCS link pointer shadow region, shadowing 0",
        bad,
        4,
        |_| write(VMCS_LINK_POINTER, vmx::region(revision, true)),
    );
    entry_failure(
        &mut r,
        &c,
        "VMCS link pointer ordinary region, shadowing 1",
        bad,
        4,
        |vm| {
            vm.enable_secondary(proc2::VMCS_SHADOWING);
            write(VMREAD_BITMAP, alloc_frame());
            write(VMWRITE_BITMAP, alloc_frame());
            write(VMCS_LINK_POINTER, vmx::region(revision, false));
        },
    );

    // MSR loading (§27.4): exit reason 34 | 1 << 31, qualification = index of the entry.
    let msr = reason::MSR_LOADING;
    for (name, entries, qual) in [
        (
            "MSR load FS base (entry 3)",
            &[
                (IA32_TSC_AUX, 0, 1),
                (IA32_TSC_AUX, 0, 2),
                (vmx::IA32_FS_BASE, 0, 0),
            ][..],
            3,
        ),
        (
            "MSR load reserved bits (entry 1)",
            &[(IA32_TSC_AUX, 1, 1)][..],
            1,
        ),
        (
            "MSR load WRMSR #GP (entry 2)",
            &[(IA32_TSC_AUX, 0, 1), (IA32_TSC_AUX, 0, 1 << 32)][..],
            2,
        ),
        ("MSR load x2APIC MSR (entry 1)", &[(0x808, 0, 0)][..], 1),
    ] {
        let list = msr_list(entries);
        entry_failure(&mut r, &c, name, msr, qual, |_| {
            write(VM_ENTRY_MSR_LOAD_ADDRESS, list);
            write(VM_ENTRY_MSR_LOAD_COUNT, entries.len() as u64);
        });
    }
    r.finish()
}
