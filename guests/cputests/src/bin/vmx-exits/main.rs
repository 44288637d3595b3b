//! vmx-exits: VM exits from non-root operation and what the VMCS records about them (SDM Vol.
//! 3C ch. 26 "VMX Non-Root Operation": §26.1.2 unconditional exits, §26.1.3 exits controlled
//! by the VM-execution controls, §26.3 changes to instruction behaviour (CR0/CR4 guest/host
//! masks and read shadows), §26.5.1 the preemption timer, §26.7 interrupt and NMI windows; ch.
//! 28 "VM Exits": §28.2.1 exit reasons and qualifications (Tables 28-3 CR access, 28-4 MOV DR,
//! 28-5 I/O), §28.2.2 interruption information, §28.2.4 instruction length, §28.2.5
//! instruction information, §28.3 saving guest state, §28.4 MSR storing, §28.6 MSR loading;
//! §27.6 event injection; §25.6.3 exception bitmap and #PF error-code mask/match; §25.6.4 I/O
//! bitmaps, §25.6.9 MSR bitmaps).
//!
//! Each case runs one guest (vmx::Vm with a snippet of `asm.rs`) with one set of controls,
//! resumes past every exit it expects (guest RIP + the VM-exit instruction length, emulating
//! where the guest uses a result) and checks the sequence of exit reasons and qualifications,
//! then that the guest reached its end.

#![no_std]
#![no_main]

mod asm;

use asm::*;
use core::sync::atomic::Ordering;
use cputests::out;
use cputests::paging::{alloc_frame, virt};
use cputests::report::Report;
use cputests::trap;
use cputests::vmx::fields::*;
use cputests::vmx::{
    self, Caps, Exit, IA32_TSC_AUX, Vm, exit, pin, proc, proc2, read, reason, write,
};
use rt::BootInfo;
use rt::arch::{cpuid, rdmsr, wrmsr};

/// An exit the case expects: reason, qualification and the bits of it to compare.
#[derive(Clone, Copy)]
struct Want {
    reason: u32,
    qual: u64,
    mask: u64,
}

const fn want(reason: u32, qual: u64) -> Want {
    Want {
        reason,
        qual,
        mask: u64::MAX,
    }
}

/// A reason whose qualification is not defined for the instruction (a register operand).
const fn any_qual(reason: u32) -> Want {
    Want {
        reason,
        qual: 0,
        mask: 0,
    }
}

fn out_of(i: usize) -> u64 {
    OUT[i].load(Ordering::Relaxed)
}

fn clear_out() {
    for o in &OUT {
        o.store(0, Ordering::Relaxed);
    }
}

/// Runs `vm` and checks that it exits with `wants` in order, calling `emulate` on each exit
/// and resuming past it, and then reaches the trampoline's final VMCALL. Returns the exits.
fn sequence(
    r: &mut Report,
    name: &str,
    vm: &mut Vm,
    wants: &[Want],
    mut emulate: impl FnMut(&mut Vm, &Exit),
) -> [Exit; 16] {
    let mut seen = [Exit::default(); 16];
    for (i, w) in wants.iter().enumerate() {
        match vm.run() {
            Ok(e) => {
                out!(
                    r,
                    "{name} #{i}: reason={:#x} qualification={:#x}",
                    e.reason,
                    e.qualification
                );
                r.expect_eq(
                    format_args!("{name} #{i} exit reason"),
                    u64::from(e.reason),
                    u64::from(w.reason),
                );
                r.expect_eq(
                    format_args!("{name} #{i} exit qualification"),
                    e.qualification & w.mask,
                    w.qual & w.mask,
                );
                if i < seen.len() {
                    seen[i] = e;
                }
                if e.reason != w.reason {
                    return seen;
                }
                emulate(vm, &e);
                // The instruction length is undefined for an exception exit: `emulate` moves
                // the RIP itself.
                if e.reason != reason::EXCEPTION_OR_NMI {
                    vm.skip();
                }
            }
            Err(o) => {
                out!(r, "{name} #{i}: {o}");
                r.check(format_args!("{name} #{i}: entry {o}"), false);
                return seen;
            }
        }
    }
    done(r, name, vm);
    seen
}

/// Resumes and checks that the guest function returned (the trampoline's VMCALL).
fn done(r: &mut Report, name: &str, vm: &mut Vm) {
    match vm.run() {
        Ok(e) => {
            let ok = vm.is_done(&e);
            if !ok {
                out!(
                    r,
                    "{name} end: reason={:#x} qualification={:#x}",
                    e.reason,
                    e.qualification
                );
            }
            r.check(
                format_args!("{name}: guest reached its end (got exit {:#x})", e.reason),
                ok,
            );
        }
        Err(o) => r.check(format_args!("{name}: resume {o}"), false),
    }
}

fn new_vm(caps: &Caps, guest: unsafe extern "C" fn(u64), arg: u64) -> Vm {
    clear_out();
    Vm::new(caps, guest, arg)
}

fn addr(sym: &u8) -> u64 {
    sym as *const u8 as u64
}

/// VM-exit/entry interruption-information fields (§25.8.3, §28.2.2): valid bit, type, vector.
const VALID: u64 = 1 << 31;
const ERROR_VALID: u64 = 1 << 11;
const fn info(kind: u64, vector: u64) -> u64 {
    VALID | kind << 8 | vector
}

const CPUID_LEAF: u64 = 0x4000_1234;

#[unsafe(no_mangle)]
fn kernel_main(_boot: &'static BootInfo) -> ! {
    cputests::init();
    let mut r = Report::new("vmx-exits");
    let (c, _vmxon_region, o) = vmx::enable();
    r.expect_eq(format_args!("VMXON: {o}"), o.code(), 0);
    let primary = PRIMARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS;

    // CPUID: unconditional (§26.1.2); the saved guest RIP, RSP and RFLAGS (§28.3.3); the host
    // emulates it and resumes past it (RIP + 2).
    let mut vm = new_vm(&c, g_cpuid, CPUID_LEAF);
    let mut r12 = 0;
    let seen = sequence(
        &mut r,
        "cpuid",
        &mut vm,
        &[want(reason::CPUID, 0)],
        |vm, _| {
            r12 = vm.regs.r12;
            vm.regs.rax = 0x11;
            vm.regs.rbx = 0x22;
            vm.regs.rcx = 0x33;
            vm.regs.rdx = 0x44;
        },
    );
    // SAFETY: the address of a label.
    let at = addr(unsafe { &g_cpuid_at });
    let e = seen[0];
    r.expect_eq(format_args!("cpuid guest RIP"), e.guest_rip, at);
    r.expect_eq(
        format_args!("cpuid instruction length"),
        u64::from(e.instruction_length),
        2,
    );
    r.expect_eq(
        format_args!("cpuid guest RFLAGS (CF, DF)"),
        e.guest_rflags,
        0x403,
    );
    r.expect_eq(format_args!("cpuid guest RSP = R12"), e.guest_rsp, r12);
    let got = [out_of(0), out_of(1), out_of(2), out_of(3)];
    out!(r, "cpuid emulated: {got:x?}");
    r.expect_eq(
        format_args!("cpuid emulated EAX..EDX"),
        (got == [0x11, 0x22, 0x33, 0x44]) as u64,
        1,
    );

    // HLT exiting, INVLPG exiting, RDTSC exiting, RDPMC exiting.
    let mut vm = new_vm(&c, g_hlt, 0);
    vm.set_bits(primary, proc::HLT_EXITING);
    let seen = sequence(&mut r, "hlt", &mut vm, &[want(reason::HLT, 0)], |_, _| {});
    r.expect_eq(
        format_args!("hlt instruction length"),
        u64::from(seen[0].instruction_length),
        1,
    );
    let mut vm = new_vm(&c, g_invlpg, 0xFFFF_8000_1234_5678);
    vm.set_bits(primary, proc::INVLPG_EXITING);
    sequence(
        &mut r,
        "invlpg",
        &mut vm,
        &[want(reason::INVLPG, 0xFFFF_8000_1234_5678)],
        |_, _| {},
    );
    let mut vm = new_vm(&c, g_rdtsc, 0);
    vm.set_bits(primary, proc::RDTSC_EXITING);
    sequence(
        &mut r,
        "rdtsc",
        &mut vm,
        &[want(reason::RDTSC, 0)],
        |_, _| {},
    );
    let mut vm = new_vm(&c, g_rdtscp, 0);
    vm.set_bits(primary, proc::RDTSC_EXITING);
    vm.enable_secondary(proc2::ENABLE_RDTSCP);
    sequence(
        &mut r,
        "rdtscp",
        &mut vm,
        &[want(reason::RDTSCP, 0)],
        |_, _| {},
    );
    // RDTSCP with "enable RDTSCP" = 0 is #UD (§26.3), seen through the exception bitmap.
    let mut vm = new_vm(&c, g_rdtscp, 0);
    write(EXCEPTION_BITMAP, 1 << 6);
    let seen = sequence(
        &mut r,
        "rdtscp disabled",
        &mut vm,
        &[want(reason::EXCEPTION_OR_NMI, 0)],
        |_, e| write(GUEST_RIP, e.guest_rip + 3),
    );
    r.expect_eq(
        format_args!("rdtscp disabled: #UD"),
        u64::from(seen[0].interruption_info),
        info(3, 6),
    );
    let mut vm = new_vm(&c, g_rdpmc, 0);
    vm.set_bits(primary, proc::RDPMC_EXITING);
    sequence(
        &mut r,
        "rdpmc",
        &mut vm,
        &[want(reason::RDPMC, 0)],
        |_, _| {},
    );

    // VMCALL and every other VMX instruction exit unconditionally (§26.1.2); the memory
    // operands are [RSP] (displacement 0 = the qualification).
    let mut vm = new_vm(&c, g_vmcall, 0x1234);
    let mut rax = 0;
    sequence(
        &mut r,
        "vmcall",
        &mut vm,
        &[want(reason::VMCALL, 0)],
        |vm, _| rax = vm.regs.rax,
    );
    r.expect_eq(
        format_args!("vmcall: guest RAX saved by the host RIP code"),
        rax,
        0x1234,
    );
    let mut vm = new_vm(&c, g_vmx, 0);
    let seen = sequence(
        &mut r,
        "vmx instructions",
        &mut vm,
        &[
            want(reason::VMXON, 0),
            want(reason::VMCLEAR, 0),
            want(reason::VMPTRLD, 0),
            want(reason::VMPTRST, 0),
            any_qual(reason::VMREAD),
            any_qual(reason::VMWRITE),
            want(reason::VMLAUNCH, 0),
            want(reason::VMRESUME, 0),
            want(reason::INVEPT, 0),
            want(reason::INVVPID, 0),
            want(reason::VMXOFF, 0),
        ],
        |_, _| {},
    );
    // VMREAD RAX, RBX: register form (bit 10), reg1 = RAX (bits 6:3, the destination),
    // reg2 = RBX (bits 31:28, the encoding) (§28.2.5, Table 28-14); VMWRITE RBX, RAX: reg1 =
    // RAX (the source), reg2 = RBX.
    let m = (1 << 10) | (0xF << 3) | (0xF << 28);
    r.expect_eq(
        format_args!("vmread instruction information"),
        u64::from(seen[4].instruction_info & m),
        1 << 10 | 3 << 28,
    );
    r.expect_eq(
        format_args!("vmwrite instruction information"),
        u64::from(seen[5].instruction_info & m),
        1 << 10 | 3 << 28,
    );

    // Control registers (Table 28-3: bits 3:0 CR, 5:4 access type, 11:8 GPR).
    let mut vm = new_vm(&c, g_mov_cr3, 0);
    vm.set_bits(primary, proc::CR3_LOAD_EXITING);
    sequence(
        &mut r,
        "mov to cr3",
        &mut vm,
        &[want(reason::CR_ACCESS, 3)],
        |_, _| {},
    );
    let mut vm = new_vm(&c, g_mov_cr3, 0);
    vm.set_bits(primary, proc::CR3_LOAD_EXITING);
    write(CR3_TARGET_COUNT, 1);
    write(CR3_TARGET_VALUE0, vm.host.cr3);
    sequence(&mut r, "mov to cr3 target value", &mut vm, &[], |_, _| {});
    let mut vm = new_vm(&c, g_read_cr3, 0);
    vm.set_bits(primary, proc::CR3_STORE_EXITING);
    sequence(
        &mut r,
        "mov from cr3",
        &mut vm,
        &[want(reason::CR_ACCESS, 3 | 1 << 4 | 1 << 8)],
        |_, _| {},
    );
    let mut vm = new_vm(&c, g_cr8, 0);
    vm.set_bits(primary, proc::CR8_LOAD_EXITING | proc::CR8_STORE_EXITING);
    sequence(
        &mut r,
        "cr8",
        &mut vm,
        &[
            want(reason::CR_ACCESS, 8),
            want(reason::CR_ACCESS, 8 | 1 << 4 | 3 << 8),
        ],
        |_, _| {},
    );
    // CR0.TS owned by the host with shadow 1, guest CR0.TS = 0 (§26.3, §25.6.6).
    let cr0_ts = 1u64 << 3;
    let mut vm = new_vm(&c, g_cr0, 0);
    write(CR0_GUEST_HOST_MASK, cr0_ts);
    write(CR0_READ_SHADOW, cr0_ts);
    write(GUEST_CR0, vm.host.cr0 & !cr0_ts);
    let seen = sequence(
        &mut r,
        "cr0 mask",
        &mut vm,
        &[want(reason::CR_ACCESS, 2 << 8)],
        |_, _| {},
    );
    let _ = seen;
    r.expect_eq(
        format_args!("cr0 read: TS from the shadow"),
        out_of(0) & cr0_ts,
        cr0_ts,
    );
    r.expect_eq(
        format_args!("cr0 write: masked TS not modified"),
        read(GUEST_CR0) & cr0_ts,
        0,
    );
    // CR4.VMXE and CR4.TSD owned by the host with shadow 0.
    let cr4_tsd = 1u64 << 2;
    let mut vm = new_vm(&c, g_cr4, 0);
    write(CR4_GUEST_HOST_MASK, vmx::CR4_VMXE | cr4_tsd);
    write(CR4_READ_SHADOW, 0);
    sequence(
        &mut r,
        "cr4 mask",
        &mut vm,
        &[want(reason::CR_ACCESS, 4 | 2 << 8)],
        |_, _| {},
    );
    r.expect_eq(
        format_args!("cr4 read: VMXE from the shadow"),
        out_of(0) & vmx::CR4_VMXE,
        0,
    );
    r.expect_eq(
        format_args!("cr4 write: masked VMXE not modified"),
        read(GUEST_CR4) & vmx::CR4_VMXE,
        vmx::CR4_VMXE,
    );

    // CLTS and LMSW with CR0.TS owned by the host (shadow 1): CLTS exits (access type 2);
    // LMSW exits when it would change a masked bit (type 3, source data in bits 31:16).
    let mut vm = new_vm(&c, g_clts_lmsw, 0);
    write(CR0_GUEST_HOST_MASK, cr0_ts);
    write(CR0_READ_SHADOW, cr0_ts);
    write(GUEST_CR0, vm.host.cr0 & !cr0_ts);
    let lmsw_source = vm.host.cr0 & 0xFFF7;
    sequence(
        &mut r,
        "clts lmsw",
        &mut vm,
        &[
            want(reason::CR_ACCESS, 2 << 4),
            want(reason::CR_ACCESS, 3 << 4 | lmsw_source << 16),
        ],
        |_, _| {},
    );

    // INVPCID (§26.1.3): exits with "INVLPG exiting" and "enable INVPCID"; is #UD without
    // "enable INVPCID" (§26.3), when CPUID.(EAX=07H,ECX=0):EBX[10] reports it.
    if cpuid(7, 0).ebx >> 10 & 1 != 0 {
        let mut vm = new_vm(&c, g_invpcid, 0);
        vm.set_bits(primary, proc::INVLPG_EXITING);
        vm.enable_secondary(proc2::ENABLE_INVPCID);
        let seen = sequence(
            &mut r,
            "invpcid",
            &mut vm,
            &[want(reason::INVPCID, 0)],
            |_, _| {},
        );
        // Register operand RAX (bits 31:28 = 0), base RSP (bits 26:23 = 4, bit 27 = 0).
        let m = 0xF << 28 | 1 << 27 | 0xF << 23;
        r.expect_eq(
            format_args!("invpcid instruction information"),
            u64::from(seen[0].instruction_info) & m,
            4 << 23,
        );
        let mut vm = new_vm(&c, g_invpcid, 0);
        write(EXCEPTION_BITMAP, 1 << 6);
        let e = vm.run().unwrap_or_default();
        out!(
            r,
            "invpcid disabled: reason={} info={:#x}",
            e.reason,
            e.interruption_info
        );
        r.expect_eq(
            format_args!("invpcid without enable INVPCID: #UD"),
            u64::from(e.interruption_info),
            info(3, 6),
        );
    }

    // MOV DR (Table 28-4: bits 2:0 DR, bit 4 direction (1 = from DR), bits 11:8 GPR).
    let mut vm = new_vm(&c, g_dr, 0);
    vm.set_bits(primary, proc::MOV_DR_EXITING);
    sequence(
        &mut r,
        "mov dr",
        &mut vm,
        &[
            want(reason::MOV_DR, 7 | 1 << 4 | 3 << 8),
            want(reason::MOV_DR, 0),
        ],
        |_, _| {},
    );

    // I/O (Table 28-5: bits 2:0 size − 1, bit 3 direction (1 = IN), bit 4 string, bit 5 REP,
    // bit 6 operand encoding (1 = immediate), bits 31:16 port).
    let mut vm = new_vm(&c, g_io, 0);
    vm.set_bits(primary, proc::UNCONDITIONAL_IO_EXITING);
    sequence(
        &mut r,
        "io unconditional",
        &mut vm,
        &[
            want(reason::IO_INSTRUCTION, 3 | 1 << 3 | 0x1234 << 16),
            want(reason::IO_INSTRUCTION, 1 << 6 | 0x80 << 16),
        ],
        |_, _| {},
    );
    let mut vm = new_vm(&c, g_io_bitmap, 0);
    let (a, b) = (alloc_frame(), alloc_frame());
    // SAFETY: fresh pool frames: bitmap A covers ports 0–7FFFH, B 8000H–FFFFH (§25.6.4).
    unsafe {
        (virt(a) as *mut u8)
            .add(0x1234 / 8)
            .write_volatile(1 << (0x1234 % 8));
        (virt(b) as *mut u8).add(0x1000 / 8).write_volatile(1);
    }
    vm.set_bits(
        primary,
        proc::USE_IO_BITMAPS | proc::UNCONDITIONAL_IO_EXITING,
    );
    write(IO_BITMAP_A, a);
    write(IO_BITMAP_B, b);
    sequence(
        &mut r,
        "io bitmaps",
        &mut vm,
        &[
            want(reason::IO_INSTRUCTION, 1 | 1 << 3 | 0x1233 << 16),
            want(reason::IO_INSTRUCTION, 0x9000 << 16),
        ],
        |_, _| {},
    );

    // RDMSR/WRMSR with MSR bitmaps (§25.6.9: read-low at 0, read-high at 1024, write-low at
    // 2048, write-high at 3072).
    let mut vm = new_vm(&c, g_msr, 0);
    let bm = alloc_frame();
    // SAFETY: a fresh pool frame.
    unsafe {
        let p = virt(bm) as *mut u8;
        p.add(0x174 / 8).write_volatile(1 << (0x174 % 8));
        p.add(1024 + 0x102 / 8).write_volatile(1 << (0x102 % 8));
        p.add(3072 + 0x103 / 8).write_volatile(1 << (0x103 % 8));
    }
    vm.set_bits(primary, proc::USE_MSR_BITMAPS);
    write(MSR_BITMAPS, bm);
    let mut rcx = [0u64; 4];
    let mut n = 0;
    sequence(
        &mut r,
        "msr bitmaps",
        &mut vm,
        &[
            want(reason::RDMSR, 0),
            want(reason::WRMSR, 0),
            want(reason::RDMSR, 0),
            want(reason::RDMSR, 0),
        ],
        |vm, _| {
            if n < rcx.len() {
                rcx[n] = vm.regs.rcx;
            }
            n += 1;
            vm.regs.rax = 0x1111_2222;
            vm.regs.rdx = 0;
        },
    );
    out!(r, "msr exits for ecx={rcx:x?}");
    r.expect_eq(
        format_args!("msr exits: ECX"),
        (rcx == [0x174, 0xC000_0103, 0xC000_0102, 0x2000]) as u64,
        1,
    );
    r.expect_eq(format_args!("rdmsr emulated"), out_of(0), 0x1111_2222);

    // PAUSE, MONITOR, MWAIT, WBINVD, RDRAND, RDSEED.
    let mut vm = new_vm(&c, g_misc, 0);
    vm.set_bits(
        primary,
        proc::PAUSE_EXITING | proc::MONITOR_EXITING | proc::MWAIT_EXITING,
    );
    vm.enable_secondary(proc2::WBINVD_EXITING | proc2::RDRAND_EXITING | proc2::RDSEED_EXITING);
    // MONITOR/MWAIT (CPUID.01H:ECX[3]), RDRAND (CPUID.01H:ECX[30]) and RDSEED
    // (CPUID.(EAX=07H,ECX=0):EBX[18]) are #UD when CPUID does not report them, and #UD has
    // priority over VM exits (§26.1.1): then the #UD exits through the exception bitmap and
    // the host moves the RIP past the instruction.
    let ecx1 = cpuid(1, 0).ecx;
    let ebx7 = cpuid(7, 0).ebx;
    let present = [
        true,
        ecx1 >> 3 & 1 != 0,
        ecx1 >> 3 & 1 != 0,
        true,
        ecx1 >> 30 & 1 != 0,
        ebx7 >> 18 & 1 != 0,
    ];
    let reasons = [
        reason::PAUSE,
        reason::MONITOR,
        reason::MWAIT,
        reason::WBINVD,
        reason::RDRAND,
        reason::RDSEED,
    ];
    let lengths = [2u64, 3, 3, 2, 4, 4];
    out!(
        r,
        "cpuid: monitor={} rdrand={} rdseed={}",
        u8::from(present[1]),
        u8::from(present[4]),
        u8::from(present[5])
    );
    write(EXCEPTION_BITMAP, 1 << 6);
    let mut wants = [want(0, 0); 6];
    for i in 0..6 {
        wants[i] = want(
            if present[i] {
                reasons[i]
            } else {
                reason::EXCEPTION_OR_NMI
            },
            0,
        );
    }
    let mut index = 0;
    let seen = sequence(&mut r, "misc", &mut vm, &wants, |_, e| {
        if e.reason == reason::EXCEPTION_OR_NMI {
            write(GUEST_RIP, e.guest_rip + lengths[index.min(5)]);
        }
        index += 1;
    });
    // One check per instruction whatever CPUID says: the #UD of an absent one; for a present
    // one its instruction length and, for RDRAND/RDSEED RCX, the instruction information
    // (bits 6:3 destination, 1 = RCX; bits 12:11 operand size, 2 = 64-bit; §28.2.5).
    let m = 0xF << 3 | 3 << 11;
    for i in 0..6 {
        let e = &seen[i];
        if !present[i] {
            r.expect_eq(
                format_args!("misc #{i}: #UD"),
                u64::from(e.interruption_info),
                info(3, 6),
            );
        } else if i >= 4 {
            r.expect_eq(
                format_args!("misc #{i}: instruction information and length"),
                u64::from(e.instruction_info & m) | u64::from(e.instruction_length) << 32,
                (1 << 3 | 2 << 11) | lengths[i] << 32,
            );
        } else {
            r.expect_eq(
                format_args!("misc #{i}: instruction length"),
                u64::from(e.instruction_length),
                lengths[i],
            );
        }
    }

    // Descriptor-table exiting (§26.1.3): qualification = displacement, instruction
    // information bits 29:28 = the instruction (Tables 28-11 and 28-12).
    let mut vm = new_vm(&c, g_desc, 0);
    vm.enable_secondary(proc2::DESCRIPTOR_TABLE_EXITING);
    let seen = sequence(
        &mut r,
        "descriptor tables",
        &mut vm,
        &[
            want(reason::GDTR_IDTR_ACCESS, 0),
            want(reason::GDTR_IDTR_ACCESS, 16),
            want(reason::GDTR_IDTR_ACCESS, 0),
            want(reason::GDTR_IDTR_ACCESS, 16),
            any_qual(reason::LDTR_TR_ACCESS),
            any_qual(reason::LDTR_TR_ACCESS),
            any_qual(reason::LDTR_TR_ACCESS),
            any_qual(reason::LDTR_TR_ACCESS),
        ],
        |_, _| {},
    );
    // Memory forms: base RSP (4, bits 26:23), base valid (bit 27 = 0), no index (bit 22),
    // 64-bit addressing (bits 9:7 = 2), segment SS (bits 17:15 = 2).
    let mem_mask = 3 << 28 | 1 << 27 | 0xF << 23 | 1 << 22 | 7 << 15 | 7 << 7;
    let mut ids = [0u64; 8];
    for (i, id) in [0u64, 1, 2, 3].iter().enumerate() {
        let got = u64::from(seen[i].instruction_info) & mem_mask;
        ids[i] = got;
        r.expect_eq(
            format_args!("descriptor-table exit {i} instruction information"),
            got,
            id << 28 | 4 << 23 | 1 << 22 | 2 << 15 | 2 << 7,
        );
    }
    // Register forms (AX): bit 10 = 1, reg1 = 0; SLDT 0, LLDT 2, STR 1, LTR 3.
    let reg_mask = 3 << 28 | 1 << 10 | 0xF << 3;
    for (i, id) in [(4usize, 0u64), (5, 2), (6, 1), (7, 3)] {
        r.expect_eq(
            format_args!("ldtr/tr exit {i} instruction information"),
            u64::from(seen[i].instruction_info) & reg_mask,
            id << 28 | 1 << 10,
        );
    }

    // Exception bitmap (§25.6.3) and the VM-exit interruption information (§28.2.2).
    let mut vm = new_vm(&c, g_ud, 0);
    write(EXCEPTION_BITMAP, 1 << 6);
    // SAFETY: a label's address.
    let ud_at = addr(unsafe { &g_ud_at });
    let mut e = vm.run().unwrap_or_default();
    out!(
        r,
        "#ud: reason={} info={:#x}",
        e.reason,
        e.interruption_info
    );
    r.expect_eq(format_args!("#UD exit reason"), u64::from(e.reason), 0);
    r.expect_eq(
        format_args!("#UD interruption information"),
        u64::from(e.interruption_info),
        info(3, 6),
    );
    r.expect_eq(
        format_args!("#UD guest RIP = the faulting instruction"),
        e.guest_rip,
        ud_at,
    );
    let mut vm = new_vm(&c, g_int3, 0);
    write(EXCEPTION_BITMAP, 1 << 3);
    // SAFETY: a label's address.
    let int3_at = addr(unsafe { &g_int3_at });
    e = vm.run().unwrap_or_default();
    out!(
        r,
        "#bp: reason={} info={:#x} len={}",
        e.reason,
        e.interruption_info,
        e.instruction_length
    );
    r.expect_eq(format_args!("#BP exit reason"), u64::from(e.reason), 0);
    r.expect_eq(
        format_args!("#BP interruption information (software exception)"),
        u64::from(e.interruption_info),
        info(6, 3),
    );
    r.expect_eq(
        format_args!("#BP instruction length"),
        u64::from(e.instruction_length),
        1,
    );
    r.expect_eq(format_args!("#BP guest RIP = INT3"), e.guest_rip, int3_at);
    // #PF: bit 14 with PFEC mask/match (exit iff (PFEC & mask) == match when bit 14 is 1, iff
    // it differs when 0). The guest reads an unmapped address inside a probe; a #PF that does
    // not exit is delivered to it.
    let unmapped = 0x0000_0200_0000_0000u64;
    for (bit14, matchv, exits) in [
        (true, 0u64, true),
        (true, 1, false),
        (false, 1, true),
        (false, 0, false),
    ] {
        let mut vm = new_vm(&c, guest_touch, unmapped);
        write(EXCEPTION_BITMAP, if bit14 { 1 << 14 } else { 0 });
        write(PAGE_FAULT_ERROR_CODE_MASK, 0);
        write(PAGE_FAULT_ERROR_CODE_MATCH, matchv);
        let e = vm.run().unwrap_or_default();
        let name = format_args!("#PF bit14={} match={matchv}", u8::from(bit14));
        out!(
            r,
            "{name}: reason={} info={:#x} error={:#x} qualification={:#x}",
            e.reason,
            e.interruption_info,
            e.interruption_error,
            e.qualification
        );
        if exits {
            r.expect_eq(format_args!("{name} exit reason"), u64::from(e.reason), 0);
            r.expect_eq(
                format_args!("{name} interruption information"),
                u64::from(e.interruption_info),
                info(3, 14) | ERROR_VALID,
            );
            r.expect_eq(
                format_args!("{name} error code"),
                u64::from(e.interruption_error),
                0,
            );
            r.expect_eq(
                format_args!("{name} qualification = linear address"),
                e.qualification,
                unmapped,
            );
        } else {
            r.check(format_args!("{name}: no exit"), vm.is_done(&e));
            r.expect_eq(format_args!("{name} guest saw #PF"), out_of(0), 14);
        }
    }

    // A non-zero mask: mask = match = 2 (W) with bit 14 set exits for a write #PF (error code
    // 2) and not for a read #PF (error code 0).
    for (write_access, exits) in [(false, false), (true, true)] {
        let guest: extern "C" fn(u64) = if write_access {
            guest_touch_write
        } else {
            guest_touch
        };
        let mut vm = new_vm(&c, guest, unmapped);
        write(EXCEPTION_BITMAP, 1 << 14);
        write(PAGE_FAULT_ERROR_CODE_MASK, 2);
        write(PAGE_FAULT_ERROR_CODE_MATCH, 2);
        let e = vm.run().unwrap_or_default();
        let name = format_args!("#PF mask=2 match=2 write={}", u8::from(write_access));
        out!(
            r,
            "{name}: reason={} error={:#x}",
            e.reason,
            e.interruption_error
        );
        if exits {
            r.expect_eq(format_args!("{name} exit reason"), u64::from(e.reason), 0);
            r.expect_eq(
                format_args!("{name} error code"),
                u64::from(e.interruption_error),
                2,
            );
        } else {
            r.check(format_args!("{name}: no exit"), vm.is_done(&e));
            r.expect_eq(format_args!("{name} guest saw #PF"), out_of(0), 14);
        }
    }

    // An exit during event delivery (§28.2.4): a software interrupt 80H injected with length 2
    // into a guest whose IDT ends below gate 80H raises #GP(80H * 8 + 2: IDT bit, EXT = 0 for
    // a software interrupt); with #GP in the exception bitmap the exit records the #GP and, as
    // IDT-vectoring information, the injected event with its instruction length.
    let mut vm = new_vm(&c, g_spin, 0);
    write(EXCEPTION_BITMAP, 1 << 13);
    write(GUEST_IDTR_LIMIT, 0x80 * 16 - 1);
    write(VM_ENTRY_INTERRUPTION_INFORMATION, info(4, 0x80));
    write(VM_ENTRY_INSTRUCTION_LENGTH, 2);
    let e = vm.run().unwrap_or_default();
    out!(
        r,
        "exit during delivery: reason={} info={:#x} error={:#x} idt-vectoring={:#x} length={}",
        e.reason,
        e.interruption_info,
        e.interruption_error,
        e.idt_vectoring_info,
        e.instruction_length
    );
    r.expect_eq(
        format_args!("delivery #GP: exit reason"),
        u64::from(e.reason),
        0,
    );
    r.expect_eq(
        format_args!("delivery #GP: interruption information"),
        u64::from(e.interruption_info),
        info(3, 13) | ERROR_VALID,
    );
    r.expect_eq(
        format_args!("delivery #GP: error code"),
        u64::from(e.interruption_error),
        0x80 * 8 + 2,
    );
    r.expect_eq(
        format_args!("delivery #GP: IDT-vectoring information"),
        u64::from(e.idt_vectoring_info),
        info(4, 0x80),
    );
    r.expect_eq(
        format_args!("delivery #GP: instruction length"),
        u64::from(e.instruction_length),
        2,
    );
    r.expect_eq(
        format_args!("delivery #GP: guest RIP = first instruction"),
        e.guest_rip,
        vmx::insn::guest_entry(),
    );

    // Triple fault (exit reason 2): #UD with an IDT limit of 0 → #GP → #DF → shutdown.
    let mut vm = new_vm(&c, g_ud, 0);
    write(GUEST_IDTR_LIMIT, 0);
    let e = vm.run().unwrap_or_default();
    out!(r, "triple fault: reason={}", e.reason);
    r.expect_eq(
        format_args!("triple fault exit reason"),
        u64::from(e.reason),
        u64::from(reason::TRIPLE_FAULT),
    );

    // Preemption timer (§26.5.1): value 0 exits before the first instruction; a spinning guest
    // exits with the saved value 0; a guest that exits at once saves a value below the start.
    let mut vm = new_vm(&c, g_spin, 0);
    vm.set_bits(
        PIN_BASED_VM_EXECUTION_CONTROLS,
        pin::ACTIVATE_PREEMPTION_TIMER,
    );
    write(VMX_PREEMPTION_TIMER_VALUE, 0);
    let e = vm.run().unwrap_or_default();
    out!(r, "preemption timer 0: reason={}", e.reason);
    r.expect_eq(
        format_args!("timer 0 exit reason"),
        u64::from(e.reason),
        u64::from(reason::PREEMPTION_TIMER),
    );
    r.expect_eq(
        format_args!("timer 0: guest RIP = first instruction"),
        e.guest_rip,
        vmx::insn::guest_entry(),
    );
    let mut vm = new_vm(&c, g_spin, 0);
    vm.set_bits(
        PIN_BASED_VM_EXECUTION_CONTROLS,
        pin::ACTIVATE_PREEMPTION_TIMER,
    );
    vm.set_bits(PRIMARY_VM_EXIT_CONTROLS, exit::SAVE_PREEMPTION_TIMER);
    write(VMX_PREEMPTION_TIMER_VALUE, 200);
    let e = vm.run().unwrap_or_default();
    out!(
        r,
        "preemption timer spin: reason={} saved={}",
        e.reason,
        read(VMX_PREEMPTION_TIMER_VALUE)
    );
    r.expect_eq(
        format_args!("timer spin exit reason"),
        u64::from(e.reason),
        u64::from(reason::PREEMPTION_TIMER),
    );
    r.expect_eq(
        format_args!("timer spin saved value"),
        read(VMX_PREEMPTION_TIMER_VALUE),
        0,
    );
    let mut vm = new_vm(&c, g_cpuid, CPUID_LEAF);
    vm.set_bits(
        PIN_BASED_VM_EXECUTION_CONTROLS,
        pin::ACTIVATE_PREEMPTION_TIMER,
    );
    vm.set_bits(PRIMARY_VM_EXIT_CONTROLS, exit::SAVE_PREEMPTION_TIMER);
    write(VMX_PREEMPTION_TIMER_VALUE, 0x1000_0000);
    let t0 = rdtsc();
    let e = vm.run().unwrap_or_default();
    let t1 = rdtsc();
    let saved = read(VMX_PREEMPTION_TIMER_VALUE);
    // The timer counts down once each time TSC bit IA32_VMX_MISC[4:0] changes (§26.5.1): it
    // cannot have counted more than the TSC advanced over the whole VMLAUNCH, shifted.
    let rate = c.preemption_timer_rate();
    let bound = ((t1 - t0) >> rate) + 1;
    r.check(
        format_args!(
            "timer decrement {} <= TSC delta >> {rate} + 1 = {bound}",
            0x1000_0000 - saved.min(0x1000_0000)
        ),
        0x1000_0000 - saved.min(0x1000_0000) <= bound,
    );
    r.expect_eq(
        format_args!("timer cpuid exit reason"),
        u64::from(e.reason),
        u64::from(reason::CPUID),
    );
    r.check(
        format_args!("timer saved value {saved:#x} in (0, 0x10000000]"),
        saved > 0 && saved <= 0x1000_0000,
    );
    // Interrupt window (§26.7.5): with RFLAGS.IF = 1 and no blocking, at once; after STI, once
    // the STI shadow has passed.
    let mut vm = new_vm(&c, g_cpuid, CPUID_LEAF);
    vm.set_bits(primary, proc::INTERRUPT_WINDOW_EXITING);
    write(GUEST_RFLAGS, 0x202);
    let e = vm.run().unwrap_or_default();
    out!(r, "interrupt window IF=1: reason={}", e.reason);
    r.expect_eq(
        format_args!("interrupt window at entry"),
        u64::from(e.reason),
        u64::from(reason::INTERRUPT_WINDOW),
    );
    r.expect_eq(
        format_args!("interrupt window RIP"),
        e.guest_rip,
        vmx::insn::guest_entry(),
    );
    let mut vm = new_vm(&c, g_sti, 0);
    vm.set_bits(primary, proc::INTERRUPT_WINDOW_EXITING);
    let e = vm.run().unwrap_or_default();
    // SAFETY: a label's address.
    let open = addr(unsafe { &g_sti_open });
    out!(r, "interrupt window after STI: reason={}", e.reason);
    r.expect_eq(
        format_args!("interrupt window after STI"),
        u64::from(e.reason),
        u64::from(reason::INTERRUPT_WINDOW),
    );
    r.expect_eq(
        format_args!("interrupt window after STI: RIP"),
        e.guest_rip,
        open,
    );
    // NMI window (§26.7.6): needs NMI exiting and virtual NMIs; no virtual-NMI blocking → at once.
    let mut vm = new_vm(&c, g_cpuid, CPUID_LEAF);
    vm.set_bits(
        PIN_BASED_VM_EXECUTION_CONTROLS,
        pin::NMI_EXITING | pin::VIRTUAL_NMIS,
    );
    vm.set_bits(primary, proc::NMI_WINDOW_EXITING);
    let e = vm.run().unwrap_or_default();
    out!(r, "nmi window: reason={}", e.reason);
    r.expect_eq(
        format_args!("NMI window at entry"),
        u64::from(e.reason),
        u64::from(reason::NMI_WINDOW),
    );

    // MSR-store and MSR-load lists of VM exits (§28.4, §28.6): the guest writes IA32_TSC_AUX
    // (MSR bitmaps all clear: no exit); the exit stores it and loads the host's value.
    let mut vm = new_vm(&c, g_tsc_aux, 0);
    vm.set_bits(primary, proc::USE_MSR_BITMAPS);
    write(MSR_BITMAPS, alloc_frame());
    let store = alloc_frame();
    let load = alloc_frame();
    // SAFETY: fresh pool frames: one 16-byte entry each (index, reserved, data).
    unsafe {
        virt(store).write_volatile(u64::from(IA32_TSC_AUX));
        virt(load).write_volatile(u64::from(IA32_TSC_AUX));
        virt(load).add(1).write_volatile(0x99);
        wrmsr(IA32_TSC_AUX, 0x5);
    }
    write(VM_EXIT_MSR_STORE_ADDRESS, store);
    write(VM_EXIT_MSR_STORE_COUNT, 1);
    write(VM_EXIT_MSR_LOAD_ADDRESS, load);
    write(VM_EXIT_MSR_LOAD_COUNT, 1);
    done(&mut r, "msr lists", &mut vm);
    // SAFETY: the store list's data slot; reading an MSR.
    let (stored, host) = unsafe { (virt(store).add(1).read_volatile(), rdmsr(IA32_TSC_AUX)) };
    out!(r, "msr lists: stored={stored:#x} host={host:#x}");
    r.expect_eq(format_args!("VM-exit MSR store"), stored, 0x77);
    r.expect_eq(format_args!("VM-exit MSR load"), host, 0x99);

    // External interrupts (§26.2, §28.2.2): a self-IPI of vector 80H through the x2APIC
    // (SDM Vol. 3A §11.12.11) is pending when the guest is entered; with external-interrupt
    // exiting the entry is followed at once by exit 1 even with the guest's RFLAGS.IF = 0.
    // With "acknowledge interrupt on exit" the exit acknowledges it (ISR set, IRR clear) and
    // records the vector; without, it stays requested and the host takes it through its IDT.
    let x2apic = enable_x2apic();
    if x2apic {
        for ack in [true, false] {
            let name = if ack {
                "external interrupt, ack"
            } else {
                "external interrupt, no ack"
            };
            let mut vm = new_vm(&c, g_spin, 0);
            vm.set_bits(
                PIN_BASED_VM_EXECUTION_CONTROLS,
                pin::EXTERNAL_INTERRUPT_EXITING,
            );
            if ack {
                vm.set_bits(
                    PRIMARY_VM_EXIT_CONTROLS,
                    exit::ACKNOWLEDGE_INTERRUPT_ON_EXIT,
                );
            }
            // SAFETY: x2APIC SELF IPI (MSR 83FH) with a vector whose gate exists; IF = 0.
            unsafe { wrmsr(X2APIC_SELF_IPI, 0x80) };
            let e = vm.run().unwrap_or_default();
            // SAFETY: reading x2APIC registers.
            let (isr, irr) = unsafe { (rdmsr(X2APIC_ISR + 4) & 1, rdmsr(X2APIC_IRR + 4) & 1) };
            out!(
                r,
                "{name}: reason={} info={:#x} isr={isr} irr={irr}",
                e.reason,
                e.interruption_info
            );
            r.expect_eq(
                format_args!("{name}: exit reason"),
                u64::from(e.reason),
                u64::from(reason::EXTERNAL_INTERRUPT),
            );
            r.expect_eq(
                format_args!("{name}: guest RIP = first instruction"),
                e.guest_rip,
                vmx::insn::guest_entry(),
            );
            r.expect_eq(
                format_args!("{name}: interruption information"),
                // Without the acknowledgement only the valid bit (31) is defined: 0.
                u64::from(e.interruption_info) & if ack { u64::MAX } else { VALID },
                if ack { info(0, 0x80) } else { 0 },
            );
            r.expect_eq(format_args!("{name}: ISR bit"), isr, u64::from(ack));
            r.expect_eq(format_args!("{name}: IRR bit"), irr, u64::from(!ack));
            if !ack {
                // SAFETY: the probe body opens an interrupt window of one instruction.
                let t = unsafe { trap::probe(take_interrupt, 0) };
                r.expect_eq(
                    format_args!("{name}: host takes vector 80H"),
                    t.map_or(0, |t| t.vector),
                    0x80,
                );
            }
            // SAFETY: EOI (MSR 80BH) ends the in-service interrupt.
            unsafe { wrmsr(X2APIC_EOI, 0) };
        }
    }

    // Event injection (§27.6): the guest VMCALLs inside a probe; the host resumes past it with
    // an event; the guest's handler sees vector, error code and return RIP.
    for (name, kind, vector, error, len) in [
        ("NMI", 2, 2, None, 0),
        ("hardware exception #GP", 3, 13, Some(0x1234u64), 0),
        ("software interrupt", 4, 0x80, None, 2),
        ("privileged software exception", 5, 1, None, 1),
        ("software exception #BP", 6, 3, None, 1),
        ("external interrupt", 0u64, 0x80u64, None, 0u64),
    ] {
        let mut vm = new_vm(&c, guest_probe_vmcall, 0);
        let first = vm.run().unwrap_or_default();
        r.expect_eq(
            format_args!("inject {name}: first exit"),
            u64::from(first.reason),
            u64::from(reason::VMCALL),
        );
        vm.skip();
        let return_rip = first.guest_rip + u64::from(first.instruction_length) + len;
        write(
            VM_ENTRY_INTERRUPTION_INFORMATION,
            info(kind, vector) | if error.is_some() { ERROR_VALID } else { 0 },
        );
        write(VM_ENTRY_EXCEPTION_ERROR_CODE, error.unwrap_or(0));
        write(VM_ENTRY_INSTRUCTION_LENGTH, len);
        // An external interrupt is injected only into a guest with RFLAGS.IF = 1 (§27.3.1.5).
        if kind == 0 {
            write(GUEST_RFLAGS, read(GUEST_RFLAGS) | 1 << 9);
        }
        done(&mut r, name, &mut vm);
        let (v, ec, rip) = (out_of(0), out_of(1), out_of(2));
        out!(
            r,
            "inject {name}: vector={v:#x} error={ec:#x} rip=+{}",
            rip.wrapping_sub(first.guest_rip)
        );
        r.expect_eq(format_args!("inject {name}: vector"), v, vector);
        r.expect_eq(
            format_args!("inject {name}: error code"),
            ec,
            error.unwrap_or(0),
        );
        r.expect_eq(format_args!("inject {name}: return RIP"), rip, return_rip);
        // Injection clears the valid bit of the entry field (§27.6: "...VM entry ... clears").
        r.expect_eq(
            format_args!("inject {name}: entry information valid bit cleared"),
            read(VM_ENTRY_INTERRUPTION_INFORMATION) >> 31,
            0,
        );
    }

    // Last: a processor that does not count the timer down in the HLT state ends the run
    // here.
    // HLT without HLT exiting: the guest halts; the timer ends it with activity state HLT.
    let mut vm = new_vm(&c, g_hlt, 0);
    vm.set_bits(
        PIN_BASED_VM_EXECUTION_CONTROLS,
        pin::ACTIVATE_PREEMPTION_TIMER,
    );
    write(VMX_PREEMPTION_TIMER_VALUE, 100);
    let e = vm.run().unwrap_or_default();
    // SAFETY: a label's address.
    let after = addr(unsafe { &g_hlt_after });
    out!(
        r,
        "hlt without exiting: reason={} activity={}",
        e.reason,
        read(GUEST_ACTIVITY_STATE)
    );
    r.expect_eq(
        format_args!("halted guest timer exit"),
        u64::from(e.reason),
        u64::from(reason::PREEMPTION_TIMER),
    );
    r.expect_eq(
        format_args!("halted guest activity state HLT"),
        read(GUEST_ACTIVITY_STATE),
        1,
    );
    r.expect_eq(
        format_args!("halted guest RIP after HLT"),
        e.guest_rip,
        after,
    );

    // Last too: NMI exiting (§26.2), when x2APIC is there to send the NMI. NMIs are not
    // maskable in root operation, so the guest sends it to itself: WRMSR to the x2APIC ICR
    // (MSR bitmaps all clear: no exit), delivery mode NMI, all including self. The NMI arrives
    // after the WRMSR and exits with interruption information type 2, vector 2, guest RIP
    // after the WRMSR; the guest then runs to its end.
    if x2apic {
        let mut vm = new_vm(&c, g_nmi_self, 0);
        vm.set_bits(PIN_BASED_VM_EXECUTION_CONTROLS, pin::NMI_EXITING);
        vm.set_bits(primary, proc::USE_MSR_BITMAPS);
        write(MSR_BITMAPS, alloc_frame());
        let e = vm.run().unwrap_or_default();
        // SAFETY: a label's address.
        let after = addr(unsafe { &g_nmi_after });
        out!(
            r,
            "nmi exiting: reason={} info={:#x}",
            e.reason,
            e.interruption_info
        );
        r.expect_eq(
            format_args!("NMI exiting: exit reason"),
            u64::from(e.reason),
            u64::from(reason::EXCEPTION_OR_NMI),
        );
        r.expect_eq(
            format_args!("NMI exiting: interruption information"),
            u64::from(e.interruption_info),
            info(2, 2),
        );
        r.expect_eq(
            format_args!("NMI exiting: guest RIP after the WRMSR"),
            e.guest_rip,
            after,
        );
        done(&mut r, "NMI exiting", &mut vm);
    }
    r.finish()
}

const IA32_APIC_BASE: u32 = 0x1B;
const X2APIC_EOI: u32 = 0x80B;
const X2APIC_SVR: u32 = 0x80F;
const X2APIC_ISR: u32 = 0x810;
const X2APIC_IRR: u32 = 0x820;
const X2APIC_SELF_IPI: u32 = 0x83F;

extern "C" fn apic_base_x2apic(_: u64) {
    // SAFETY: EN (bit 11) and EXTD (bit 10): xAPIC → x2APIC mode (Vol. 3A §11.12.5).
    unsafe { wrmsr(IA32_APIC_BASE, rdmsr(IA32_APIC_BASE) | 1 << 11 | 1 << 10) };
}

/// Switches the local APIC to x2APIC mode and software-enables it (SVR bit 8, spurious vector
/// FFH); `false` when CPUID does not report x2APIC or the switch faults.
fn enable_x2apic() -> bool {
    if cpuid(1, 0).ecx >> 21 & 1 == 0 {
        return false;
    }
    // SAFETY: the probe body writes IA32_APIC_BASE only.
    if unsafe { trap::probe(apic_base_x2apic, 0) }.is_some() {
        return false;
    }
    // SAFETY: x2APIC mode is on: SVR is MSR 80FH.
    unsafe { wrmsr(X2APIC_SVR, 0x1FF) };
    true
}

/// STI; NOP; CLI: a pending interrupt is delivered after the NOP (blocking by STI).
extern "C" fn take_interrupt(_: u64) {
    // SAFETY: only the vector-80H gate can fire (the one pending interrupt); the probe
    // catches it.
    unsafe { core::arch::asm!("sti", "nop", "cli", options(nomem, nostack)) };
}

/// RDTSC.
fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads the time-stamp counter only.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Reads `addr` inside a probe; stores the vector of the fault (or 0) in OUT[0].
extern "C" fn guest_touch(addr: u64) {
    extern "C" fn read(addr: u64) {
        // SAFETY: the probe catches the fault of an unmapped address.
        let _ = unsafe { (addr as *const u64).read_volatile() };
    }
    // SAFETY: the probe body reads one quadword.
    let t = unsafe { trap::probe(read, addr) };
    OUT[0].store(t.map_or(0, |t| t.vector), Ordering::Relaxed);
}

/// Writes `addr` inside a probe; stores the vector of the fault (or 0) in OUT[0].
extern "C" fn guest_touch_write(addr: u64) {
    extern "C" fn store(addr: u64) {
        // SAFETY: the probe catches the fault of an unmapped address.
        unsafe { (addr as *mut u64).write_volatile(0) };
    }
    // SAFETY: the probe body writes one quadword.
    let t = unsafe { trap::probe(store, addr) };
    OUT[0].store(t.map_or(0, |t| t.vector), Ordering::Relaxed);
}

/// VMCALL inside a probe: stores the vector, error code and RIP of the event delivered after
/// it (or zeros).
extern "C" fn guest_probe_vmcall(_: u64) {
    // SAFETY: the probe body executes VMCALL, which exits.
    let t = unsafe { trap::probe(g_vmcall_body, 0) }.unwrap_or_default();
    OUT[0].store(t.vector, Ordering::Relaxed);
    OUT[1].store(t.error, Ordering::Relaxed);
    OUT[2].store(t.rip, Ordering::Relaxed);
}
