//! vmx-insns: the VMX instructions of root operation and every VM-instruction error number
//! this processor can produce (SDM Vol. 3C ch. 31 "VMX Instruction Reference", §31.2
//! conventions, §31.4 Table 31-1 "VM-Instruction Error Numbers"; §24.7 enabling VMX, §24.8
//! restrictions on VMX operation).
//!
//! - #UD outside VMX operation: VMXON with CR4.VMXE = 0; VMXOFF, VMCLEAR, VMPTRLD, VMPTRST,
//!   VMREAD, VMWRITE, VMLAUNCH, VMRESUME, INVEPT, INVVPID and VMCALL before VMXON.
//! - #GP(0) from VMXON: IA32_FEATURE_CONTROL unlocked, CR0.NE = 0 (CR0 fixed bits); a WRMSR to
//!   the locked IA32_FEATURE_CONTROL; in VMX operation, clearing CR4.VMXE or CR0.NE.
//! - VMfailInvalid: VMXON with an unaligned pointer, one beyond the physical-address width, a
//!   region with the wrong revision or with bit 31 set; VMXON in root operation, VMREAD,
//!   VMWRITE, VMCALL, VMLAUNCH and VMRESUME with no current VMCS (VMPTRST then stores
//!   FFFFFFFF_FFFFFFFFH).
//! - VMfailValid(n): 1 VMCALL in root; 2 and 3 VMCLEAR (unaligned or too wide, VMXON pointer);
//!   4 VMLAUNCH of a launched VMCS (after one real VM entry and exit); 5 VMRESUME of a clear
//!   VMCS; 9, 10, 11 VMPTRLD (address, VMXON pointer, revision); 12 VMREAD/VMWRITE of an
//!   unsupported field (bits 63:32 set, an index above IA32_VMX_VMCS_ENUM, "high" access to a
//!   16-bit field); 13 VMWRITE of a read-only field (IA32_VMX_MISC[29] = 0); 15 VMXON in root
//!   operation; 26 VMLAUNCH/VMRESUME right after MOV SS; 28 INVEPT/INVVPID with an invalid
//!   type or descriptor. 7 and 8 (bad controls, bad host state) are vmx-entry's. 6 ("VMRESUME
//!   after VMXOFF") is not produced by any step of the VMLAUNCH/VMRESUME pseudo-code in §31.3
//!   (VMXON leaves no current VMCS, so a VMRESUME there is VMfailInvalid, and a VMPTRLD of the
//!   launched region is a normal resume); 16–25 need SMM and the dual-monitor treatment, which
//!   this processor does not have.
//! - VMREAD/VMWRITE widths (§31.3, VMWRITE "Operation"): a 16-bit field keeps the low 16 bits of
//!   what is written, a 32-bit field the low 32; "high" access (encoding bit 0) reads and writes
//!   bits 63:32 of a 64-bit field.
//! - VMPTRST returns the current-VMCS pointer; VMCLEAR of the current VMCS makes it invalid;
//!   VMXOFF leaves VMX operation (VMREAD is #UD again and CR4.VMXE may be cleared).
//!
//! - #GP(0) at CPL 3 in VMX root operation for every VMX instruction (ring 3 entered with
//!   IRETQ on pages mapped as user code).

#![no_std]
#![no_main]

mod asm;

use asm::*;
use cputests::arch::{UserContext, enter_user};
use cputests::desc::USER_CS;
use cputests::out;
use cputests::paging::{self, AddressSpace, RW, SIZE_4K, US, XD};
use cputests::report::Report;
use cputests::trap;
use cputests::vmx::fields::*;
use cputests::vmx::insn::{self, GuestRegs, Outcome};
use cputests::vmx::{self, Caps, Vm, vmclear, vmptrld, vmptrst, vmread, vmwrite, vmxoff, vmxon};
use rt::BootInfo;
use rt::arch::{cpuid, rdmsr, read_cr0, read_cr4, write_cr0, write_cr4, wrmsr};

const UD: u64 = 6;
const GP: u64 = 13;

/// Runs `f(arg)` under a probe: the exception vector and error code, or `None`.
fn fault(f: extern "C" fn(u64), arg: u64) -> Option<(u64, u64)> {
    // SAFETY: each probe body executes one instruction whose only effects are checked here.
    unsafe { trap::probe(f, arg) }.map(|t| (t.vector, t.error))
}

fn expect_fault(r: &mut Report, name: &str, f: extern "C" fn(u64), arg: u64, want: (u64, u64)) {
    let got = fault(f, arg);
    match got {
        Some((v, e)) => out!(r, "{name}: {} error={e:#x}", trap::mnemonic(v)),
        None => out!(r, "{name}: no exception"),
    }
    let (v, e) = got.unwrap_or((u64::MAX, u64::MAX));
    r.expect_eq(format_args!("{name} vector"), v, want.0);
    r.expect_eq(format_args!("{name} error code"), e, want.1);
}

fn expect(r: &mut Report, name: &str, got: Outcome, want: Outcome) {
    out!(r, "{name}: {got}");
    r.expect_eq(
        format_args!("{name}: {got}, want {want}"),
        got.code(),
        want.code(),
    );
}

extern "C" fn p_vmxon(pa: u64) {
    let _ = vmxon(pa);
}
extern "C" fn p_vmxoff(_: u64) {
    let _ = vmxoff();
}
extern "C" fn p_vmclear(pa: u64) {
    let _ = vmclear(pa);
}
extern "C" fn p_vmptrld(pa: u64) {
    let _ = vmptrld(pa);
}
extern "C" fn p_vmptrst(_: u64) {
    let _ = vmptrst();
}
extern "C" fn p_vmread(field: u64) {
    let _ = insn::vmread64(field);
}
extern "C" fn p_vmwrite(field: u64) {
    let _ = insn::vmwrite64(field, 0);
}
extern "C" fn p_vmlaunch(resume: u64) {
    let mut regs = GuestRegs::default();
    // SAFETY: outside VMX operation VMLAUNCH/VMRESUME raise #UD before anything else.
    let _ = unsafe { insn::enter(&mut regs, resume != 0) };
}
extern "C" fn p_invept(_: u64) {
    let _ = insn::invept(1, &[0, 0]);
}
extern "C" fn p_invvpid(_: u64) {
    let _ = insn::invvpid(2, &[0, 0]);
}
extern "C" fn p_vmcall(_: u64) {
    let _ = insn::vmcall();
}
extern "C" fn p_wrmsr_fc(value: u64) {
    // SAFETY: a write to the locked IA32_FEATURE_CONTROL raises #GP(0) and changes nothing.
    unsafe { wrmsr(vmx::IA32_FEATURE_CONTROL, value) };
}
extern "C" fn p_write_cr4(value: u64) {
    // SAFETY: the value differs from CR4 only in VMXE, which VMX operation forbids clearing.
    unsafe { write_cr4(value) };
}
extern "C" fn p_write_cr0(value: u64) {
    // SAFETY: the value differs from CR0 only in NE.
    unsafe { write_cr0(value) };
}

/// The guest of the one real VM entry: returns at once.
extern "C" fn guest_nothing(_: u64) {}

/// The processor's physical-address width (CPUID.80000008H:EAX[7:0]).
fn maxphyaddr() -> u32 {
    cpuid(0x8000_0008, 0).eax & 0xFF
}

/// Where the ring-3 pages live: PML4 slot 2.
const USER_CODE: u64 = 0x0000_0100_0000_0000;
const USER_STACK: u64 = USER_CODE + 0x10_0000;
const USER_DATA: u64 = USER_STACK + SIZE_4K;

/// Maps the snippets, a stack and a data page for ring 3 in a new address space and loads it.
fn map_user() -> AddressSpace {
    let space = AddressSpace::new();
    space.map(USER_STACK, paging::alloc_frame(), SIZE_4K, US | RW | XD);
    space.map(USER_DATA, paging::alloc_frame(), SIZE_4K, US | RW | XD);
    let (start, end) = (
        &raw const vmx_user_start as u64,
        &raw const vmx_user_end as u64,
    );
    paging::map_user_code(&space, start, end, USER_CODE);
    // SAFETY: the new hierarchy shares the runtime's mappings of the image, stacks and tables.
    unsafe { space.load(0, false) };
    space
}

/// Every VMX instruction at CPL 3 in VMX root operation: #GP(0) (§31.3, each "Operation":
/// "ELSIF CPL > 0 THEN #GP(0)").
fn ring3(r: &mut Report) {
    let cases: [(&str, *const u8); 12] = [
        ("vmread", &raw const u_vmread),
        ("vmwrite", &raw const u_vmwrite),
        ("vmptrst", &raw const u_vmptrst),
        ("vmptrld", &raw const u_vmptrld),
        ("vmclear", &raw const u_vmclear),
        ("vmxon", &raw const u_vmxon),
        ("vmxoff", &raw const u_vmxoff),
        ("vmcall", &raw const u_vmcall),
        ("vmlaunch", &raw const u_vmlaunch),
        ("vmresume", &raw const u_vmresume),
        ("invept", &raw const u_invept),
        ("invvpid", &raw const u_invvpid),
    ];
    let start = &raw const vmx_user_start as u64;
    for (name, at) in cases {
        let rip = USER_CODE + (at as u64 - start);
        let context = UserContext {
            rip,
            rsp: USER_STACK + SIZE_4K,
            rdi: USER_DATA,
            rsi: 0,
        };
        // SAFETY: the context names mapped user code and stack; the probe is the way back.
        let t = unsafe { trap::probe(enter_user, &raw const context as u64) };
        let (v, e, cs) = t.map_or((u64::MAX, u64::MAX, 0), |t| (t.vector, t.error, t.cs));
        out!(r, "{name} at cpl 3: {} error={e:#x}", trap::mnemonic(v));
        r.expect_eq(format_args!("{name} at CPL 3: vector"), v, GP);
        r.expect_eq(format_args!("{name} at CPL 3: error code"), e, 0);
        r.expect_eq(
            format_args!("{name} at CPL 3: faulted in ring 3"),
            cs,
            u64::from(USER_CS),
        );
    }
}

#[unsafe(no_mangle)]
fn kernel_main(_boot: &'static BootInfo) -> ! {
    cputests::init();
    let mut r = Report::new("vmx-insns");
    let vmx_bit = u64::from(cpuid(1, 0).ecx >> 5 & 1);
    out!(r, "cpuid.1:ecx.vmx={vmx_bit}");
    r.expect_eq(format_args!("CPUID.1:ECX.VMX"), vmx_bit, 1);
    let caps = Caps::read();
    let revision = caps.revision();
    let too_wide = 1u64 << maxphyaddr();
    out!(
        r,
        "basic: region-size={} true-controls={} misc[29]={}",
        (caps.basic >> 32) & 0x1FFF,
        (caps.basic >> 55) & 1,
        (caps.misc >> 29) & 1
    );
    // §A.1: bits 44:32 the region size (at most 4096), bit 31 always 0.
    r.check(
        format_args!("IA32_VMX_BASIC region size <= 4096"),
        (caps.basic >> 32) & 0x1FFF <= 4096,
    );
    r.expect_eq(
        format_args!("IA32_VMX_BASIC bit 31"),
        caps.basic >> 31 & 1,
        0,
    );

    // Outside VMX operation with CR4.VMXE = 0.
    let vmxon_region = vmx::region(revision, false);
    let cr4 = read_cr4();
    // SAFETY: VMXE has no effect outside VMX operation.
    unsafe { write_cr4(cr4 & !vmx::CR4_VMXE) };
    expect_fault(&mut r, "vmxon cr4.vmxe=0", p_vmxon, vmxon_region, (UD, 0));
    vmx::fix_control_registers(&caps);

    // Outside VMX operation with CR4.VMXE = 1: every other VMX instruction is #UD.
    let ud_cases: [(&str, extern "C" fn(u64), u64); 11] = [
        ("vmxoff outside", p_vmxoff, 0),
        ("vmclear outside", p_vmclear, vmxon_region),
        ("vmptrld outside", p_vmptrld, vmxon_region),
        ("vmptrst outside", p_vmptrst, 0),
        ("vmread outside", p_vmread, u64::from(GUEST_RIP)),
        ("vmwrite outside", p_vmwrite, u64::from(GUEST_RIP)),
        ("vmlaunch outside", p_vmlaunch, 0),
        ("vmresume outside", p_vmlaunch, 1),
        ("invept outside", p_invept, 0),
        ("invvpid outside", p_invvpid, 0),
        ("vmcall outside", p_vmcall, 0),
    ];
    for (name, f, arg) in ud_cases {
        expect_fault(&mut r, name, f, arg, (UD, 0));
    }

    // #GP(0) from VMXON: IA32_FEATURE_CONTROL not locked (the board starts it at 0).
    // SAFETY: reading IA32_FEATURE_CONTROL has no side effect.
    let fc = unsafe { rdmsr(vmx::IA32_FEATURE_CONTROL) };
    out!(r, "feature-control at boot: {fc:#x}");
    if fc & vmx::FEATURE_CONTROL_LOCK == 0 {
        expect_fault(
            &mut r,
            "vmxon feature-control unlocked",
            p_vmxon,
            vmxon_region,
            (GP, 0),
        );
    }
    let fc = vmx::lock_feature_control();
    r.expect_eq(
        format_args!("feature-control locked"),
        fc & (vmx::FEATURE_CONTROL_LOCK | vmx::FEATURE_CONTROL_VMX_OUTSIDE_SMX),
        vmx::FEATURE_CONTROL_LOCK | vmx::FEATURE_CONTROL_VMX_OUTSIDE_SMX,
    );
    expect_fault(
        &mut r,
        "wrmsr locked feature-control",
        p_wrmsr_fc,
        fc,
        (GP, 0),
    );
    // CR0.NE is fixed to 1 (IA32_VMX_CR0_FIXED0 bit 5): VMXON with NE = 0 is #GP(0).
    r.expect_eq(
        format_args!("CR0_FIXED0 PE|NE|PG"),
        caps.cr0_fixed0 & 0x8000_0021,
        0x8000_0021,
    );
    r.expect_eq(
        format_args!("CR4_FIXED0 VMXE"),
        caps.cr4_fixed0 & vmx::CR4_VMXE,
        vmx::CR4_VMXE,
    );
    let cr0 = read_cr0();
    // SAFETY: NE only selects how x87 errors are reported; no x87 code runs here.
    unsafe { write_cr0(cr0 & !vmx::CR0_NE) };
    expect_fault(&mut r, "vmxon cr0.ne=0", p_vmxon, vmxon_region, (GP, 0));
    // SAFETY: back to the running value.
    unsafe { write_cr0(cr0) };

    // VMfailInvalid from VMXON: pointer and region checks.
    let unaligned = vmxon_region + 8;
    expect(
        &mut r,
        "vmxon unaligned",
        vmxon(unaligned),
        Outcome::FailInvalid,
    );
    expect(
        &mut r,
        "vmxon beyond maxphyaddr",
        vmxon(too_wide),
        Outcome::FailInvalid,
    );
    let bad_rev = vmx::region(revision ^ 1, false);
    expect(
        &mut r,
        "vmxon wrong revision",
        vmxon(bad_rev),
        Outcome::FailInvalid,
    );
    let shadow_rev = vmx::region(revision, true);
    expect(
        &mut r,
        "vmxon revision bit 31",
        vmxon(shadow_rev),
        Outcome::FailInvalid,
    );

    // Into VMX root operation.
    expect(&mut r, "vmxon", vmxon(vmxon_region), Outcome::Succeed);
    let (o, ptr) = vmptrst();
    expect(&mut r, "vmptrst after vmxon", o, Outcome::Succeed);
    r.expect_eq(
        format_args!("current-VMCS pointer after VMXON"),
        ptr,
        u64::MAX,
    );
    // In VMX operation CR4.VMXE and CR0.NE cannot be cleared (§24.8).
    let cr4 = read_cr4();
    expect_fault(
        &mut r,
        "clear cr4.vmxe in vmx operation",
        p_write_cr4,
        cr4 & !vmx::CR4_VMXE,
        (GP, 0),
    );
    let cr0 = read_cr0();
    expect_fault(
        &mut r,
        "clear cr0.ne in vmx operation",
        p_write_cr0,
        cr0 & !vmx::CR0_NE,
        (GP, 0),
    );

    // No current VMCS: VMfailInvalid.
    expect(
        &mut r,
        "vmxon in root, no current vmcs",
        vmxon(vmxon_region),
        Outcome::FailInvalid,
    );
    expect(
        &mut r,
        "vmread no current vmcs",
        vmread(GUEST_RIP).err().unwrap_or(Outcome::Succeed),
        Outcome::FailInvalid,
    );
    expect(
        &mut r,
        "vmwrite no current vmcs",
        vmwrite(GUEST_RIP, 0),
        Outcome::FailInvalid,
    );
    expect(
        &mut r,
        "vmcall no current vmcs",
        insn::vmcall(),
        Outcome::FailInvalid,
    );
    let mut regs = GuestRegs::default();
    for (name, resume) in [
        ("vmlaunch no current vmcs", false),
        ("vmresume no current vmcs", true),
    ] {
        // SAFETY: with no current VMCS the instruction fails (VMfailInvalid) before any entry.
        let o = unsafe { insn::enter(&mut regs, resume) }
            .err()
            .unwrap_or(Outcome::Succeed);
        expect(&mut r, name, o, Outcome::FailInvalid);
    }
    expect(
        &mut r,
        "vmclear unaligned, no current vmcs",
        vmclear(unaligned),
        Outcome::FailInvalid,
    );

    // A current VMCS.
    let a = vmx::region(revision, false);
    expect(&mut r, "vmclear a", vmclear(a), Outcome::Succeed);
    expect(&mut r, "vmptrld a", vmptrld(a), Outcome::Succeed);
    let (o, ptr) = vmptrst();
    expect(&mut r, "vmptrst", o, Outcome::Succeed);
    r.expect_eq(format_args!("VMPTRST = a"), ptr, a);

    let _space = map_user();
    ring3(&mut r);
    load_data_segments(cputests::desc::KERNEL_DS);
    r.expect_eq(format_args!("VMPTRST after ring 3"), vmptrst().1, a);
    expect(
        &mut r,
        "vmcall in root",
        insn::vmcall(),
        Outcome::FailValid(1),
    );
    expect(
        &mut r,
        "vmclear unaligned",
        vmclear(unaligned),
        Outcome::FailValid(2),
    );
    expect(
        &mut r,
        "vmclear beyond maxphyaddr",
        vmclear(too_wide),
        Outcome::FailValid(2),
    );
    expect(
        &mut r,
        "vmclear vmxon pointer",
        vmclear(vmxon_region),
        Outcome::FailValid(3),
    );
    expect(
        &mut r,
        "vmptrld unaligned",
        vmptrld(unaligned),
        Outcome::FailValid(9),
    );
    expect(
        &mut r,
        "vmptrld beyond maxphyaddr",
        vmptrld(too_wide),
        Outcome::FailValid(9),
    );
    expect(
        &mut r,
        "vmptrld vmxon pointer",
        vmptrld(vmxon_region),
        Outcome::FailValid(10),
    );
    expect(
        &mut r,
        "vmptrld wrong revision",
        vmptrld(bad_rev),
        Outcome::FailValid(11),
    );
    // A failed VMPTRLD leaves the current VMCS alone.
    r.expect_eq(format_args!("VMPTRST after failed VMPTRLD"), vmptrst().1, a);
    expect(
        &mut r,
        "vmxon in root",
        vmxon(vmxon_region),
        Outcome::FailValid(15),
    );
    // VMREAD of the error field returns the last error.
    r.expect_eq(
        format_args!("VM-instruction error field"),
        vmx::read(VM_INSTRUCTION_ERROR),
        15,
    );
    // A successful instruction does not change the error field (§31.2: VMsucceed leaves it).
    expect(
        &mut r,
        "vmwrite guest rip",
        vmwrite(GUEST_RIP, 0x1234),
        Outcome::Succeed,
    );
    r.expect_eq(
        format_args!("error field after VMsucceed"),
        vmx::read(VM_INSTRUCTION_ERROR),
        15,
    );

    // VMREAD/VMWRITE of unsupported and read-only fields.
    let max_index = (caps.vmcs_enum >> 1) & 0x1FF;
    out!(r, "vmcs-enum max index={max_index}");
    expect(
        &mut r,
        "vmread encoding bits 63:32 set",
        insn::vmread64(u64::from(GUEST_RIP) | 1 << 32)
            .err()
            .unwrap_or(Outcome::Succeed),
        Outcome::FailValid(12),
    );
    expect(
        &mut r,
        "vmwrite encoding bits 63:32 set",
        insn::vmwrite64(u64::from(GUEST_RIP) | 1 << 32, 0),
        Outcome::FailValid(12),
    );
    expect(
        &mut r,
        "vmread 16-bit field high access",
        vmread(GUEST_ES_SELECTOR | ACCESS_HIGH)
            .err()
            .unwrap_or(Outcome::Succeed),
        Outcome::FailValid(12),
    );
    expect(
        &mut r,
        "vmread natural-width field high access",
        vmread(GUEST_RIP | ACCESS_HIGH)
            .err()
            .unwrap_or(Outcome::Succeed),
        Outcome::FailValid(12),
    );
    // Every encoding with an index above IA32_VMX_VMCS_ENUM's is unsupported (§A.9), in all
    // 4 widths × 4 types.
    let mut above = 0;
    for width in 0..4u32 {
        for kind in 0..4u32 {
            let e = (width << 13) | (kind << 10) | ((max_index as u32 + 1) << 1);
            if vmread(e) == Err(Outcome::FailValid(12)) {
                above += 1;
            }
        }
    }
    out!(
        r,
        "vmread index max+1: unsupported in {above}/16 width-type pairs"
    );
    r.expect_eq(format_args!("index above VMCS_ENUM unsupported"), above, 16);
    // ... and the index it reports is used by some field (§A.9: "the highest index value used
    // for any VMCS encoding").
    let mut at_max = 0;
    for width in 0..4u32 {
        for kind in 0..4u32 {
            if vmread((width << 13) | (kind << 10) | ((max_index as u32) << 1)).is_ok() {
                at_max += 1;
            }
        }
    }
    out!(
        r,
        "vmread index max: supported in {at_max}/16 width-type pairs"
    );
    r.check(
        format_args!("some field has the VMCS_ENUM index"),
        at_max > 0,
    );
    // The fields this library uses are all supported, with indexes at most VMCS_ENUM's.
    let mut bad = 0;
    for f in [
        VIRTUAL_PROCESSOR_ID,
        GUEST_TR_SELECTOR,
        HOST_TR_SELECTOR,
        IO_BITMAP_B,
        VMREAD_BITMAP,
        VMWRITE_BITMAP,
        EPT_POINTER,
        GUEST_PHYSICAL_ADDRESS,
        VMCS_LINK_POINTER,
        HOST_IA32_EFER,
        SECONDARY_PROCESSOR_BASED_VM_EXECUTION_CONTROLS,
        VM_EXIT_INSTRUCTION_INFORMATION,
        VMX_PREEMPTION_TIMER_VALUE,
        HOST_IA32_SYSENTER_CS,
        CR3_TARGET_VALUE1,
        GUEST_LINEAR_ADDRESS,
        GUEST_IA32_SYSENTER_EIP,
        HOST_RIP,
    ] {
        if vmread(f).is_err() || u64::from(index(f)) > max_index {
            bad += 1;
            out!(r, "field {f:#06x} unsupported or above VMCS_ENUM");
        }
    }
    r.expect_eq(format_args!("known fields supported"), bad, 0);
    r.expect_eq(
        format_args!("IA32_VMX_MISC[29] (VMWRITE to any field)"),
        caps.misc >> 29 & 1,
        0,
    );
    expect(
        &mut r,
        "vmwrite exit reason (read-only)",
        vmwrite(EXIT_REASON, 0),
        Outcome::FailValid(13),
    );
    expect(
        &mut r,
        "vmwrite exit qualification (read-only)",
        vmwrite(EXIT_QUALIFICATION, 0),
        Outcome::FailValid(13),
    );
    expect(
        &mut r,
        "vmwrite guest-physical address (read-only)",
        vmwrite(GUEST_PHYSICAL_ADDRESS, 0),
        Outcome::FailValid(13),
    );

    // Widths.
    let _ = vmwrite(GUEST_ES_SELECTOR, 0xDEAD_1234_5678);
    r.expect_eq(
        format_args!("16-bit field keeps 16 bits"),
        vmx::read(GUEST_ES_SELECTOR),
        0x5678,
    );
    let _ = vmwrite(GUEST_ES_LIMIT, 0xDEAD_1234_5678);
    r.expect_eq(
        format_args!("32-bit field keeps 32 bits"),
        vmx::read(GUEST_ES_LIMIT),
        0x1234_5678,
    );
    let _ = vmwrite(GUEST_RIP, 0xFFFF_8000_1234_5678);
    r.expect_eq(
        format_args!("natural-width field"),
        vmx::read(GUEST_RIP),
        0xFFFF_8000_1234_5678,
    );
    let _ = vmwrite(VMCS_LINK_POINTER, 0x1122_3344_5566_7788);
    r.expect_eq(
        format_args!("64-bit field full"),
        vmx::read(VMCS_LINK_POINTER),
        0x1122_3344_5566_7788,
    );
    r.expect_eq(
        format_args!("64-bit field high read"),
        vmx::read(VMCS_LINK_POINTER | ACCESS_HIGH),
        0x1122_3344,
    );
    expect(
        &mut r,
        "vmwrite high",
        vmwrite(VMCS_LINK_POINTER | ACCESS_HIGH, 0xFFFF_FFFF_AABB_CCDD),
        Outcome::Succeed,
    );
    r.expect_eq(
        format_args!("64-bit field after high write"),
        vmx::read(VMCS_LINK_POINTER),
        0xAABB_CCDD_5566_7788,
    );
    let _ = vmwrite(VMCS_LINK_POINTER, u64::MAX);

    // VMLAUNCH/VMRESUME before any check of the VMCS contents.
    expect(
        &mut r,
        "vmlaunch after mov ss",
        insn::launch_after_mov_ss(false),
        Outcome::FailValid(26),
    );
    expect(
        &mut r,
        "vmresume after mov ss",
        insn::launch_after_mov_ss(true),
        Outcome::FailValid(26),
    );
    // SAFETY: the VMCS is clear: VMRESUME fails with error 5 before any entry check.
    let o = unsafe { insn::enter(&mut regs, true) }
        .err()
        .unwrap_or(Outcome::Succeed);
    expect(&mut r, "vmresume clear vmcs", o, Outcome::FailValid(5));

    // INVEPT/INVVPID with an invalid type or operand: error 28 (§31.3 INVEPT, INVVPID).
    let ev = caps.ept_vpid;
    out!(
        r,
        "ept-vpid: invept={} single={} all={} invvpid={} types={:#x}",
        ev >> 20 & 1,
        ev >> 25 & 1,
        ev >> 26 & 1,
        ev >> 32 & 1,
        ev >> 40 & 0xF
    );
    // INVEPT types are 1 and 2 only: 0 and 3 are never supported.
    expect(
        &mut r,
        "invept type 0",
        insn::invept(0, &[0, 0]),
        Outcome::FailValid(28),
    );
    expect(
        &mut r,
        "invept type 3",
        insn::invept(3, &[0, 0]),
        Outcome::FailValid(28),
    );
    // Single-context with an invalid EPTP (memory type 7, §25.6.11 / §31.3 INVEPT).
    expect(
        &mut r,
        "invept single bad eptp",
        insn::invept(1, &[0x1000 | 7 | 3 << 3, 0]),
        Outcome::FailValid(28),
    );
    expect(
        &mut r,
        "invept all",
        insn::invept(2, &[0, 0]),
        Outcome::Succeed,
    );
    expect(
        &mut r,
        "invvpid type 4",
        insn::invvpid(4, &[1, 0]),
        Outcome::FailValid(28),
    );
    expect(
        &mut r,
        "invvpid descriptor bits 63:16",
        insn::invvpid(2, &[1 << 16, 0]),
        Outcome::FailValid(28),
    );
    expect(
        &mut r,
        "invvpid single vpid 0",
        insn::invvpid(1, &[0, 0]),
        Outcome::FailValid(28),
    );
    expect(
        &mut r,
        "invvpid address vpid 0",
        insn::invvpid(0, &[0, 0x1000]),
        Outcome::FailValid(28),
    );
    expect(
        &mut r,
        "invvpid address non-canonical",
        insn::invvpid(0, &[1, 0x0000_8000_0000_0000]),
        Outcome::FailValid(28),
    );
    expect(
        &mut r,
        "invvpid retaining globals vpid 0",
        insn::invvpid(3, &[0, 0]),
        Outcome::FailValid(28),
    );
    expect(
        &mut r,
        "invvpid address",
        insn::invvpid(0, &[1, 0x1000]),
        Outcome::Succeed,
    );
    expect(
        &mut r,
        "invvpid single",
        insn::invvpid(1, &[1, 0]),
        Outcome::Succeed,
    );
    expect(
        &mut r,
        "invvpid all",
        insn::invvpid(2, &[0, 0]),
        Outcome::Succeed,
    );

    // VMCLEAR of the current VMCS: no current VMCS afterwards.
    expect(&mut r, "vmclear current", vmclear(a), Outcome::Succeed);
    r.expect_eq(
        format_args!("VMPTRST after VMCLEAR of current"),
        vmptrst().1,
        u64::MAX,
    );
    expect(
        &mut r,
        "vmread after vmclear",
        vmread(GUEST_RIP).err().unwrap_or(Outcome::Succeed),
        Outcome::FailInvalid,
    );
    expect(
        &mut r,
        "invept no current vmcs",
        insn::invept(3, &[0, 0]),
        Outcome::FailInvalid,
    );

    // A shadow-VMCS region loads (VMCS shadowing is supported, §31.3 VMPTRLD).
    let shadow_allowed = vmx::allowed1(caps.proc2, vmx::proc2::VMCS_SHADOWING);
    let want = if shadow_allowed {
        Outcome::Succeed
    } else {
        Outcome::FailValid(11)
    };
    expect(&mut r, "vmptrld shadow vmcs", vmptrld(shadow_rev), want);

    // One real VM entry and exit, then VMLAUNCH of the launched VMCS: error 4.
    let mut vm = Vm::new(&caps, guest_nothing, 0);
    match vm.run() {
        Ok(exit) => {
            out!(
                r,
                "launch: exit reason {} rax-done={}",
                exit.reason,
                u8::from(vm.is_done(&exit))
            );
            r.expect_eq(
                format_args!("guest exit reason"),
                u64::from(exit.reason),
                u64::from(vmx::reason::VMCALL),
            );
        }
        Err(o) => {
            out!(r, "launch: {o}");
            r.check(format_args!("VMLAUNCH of the standard guest: {o}"), false);
        }
    }
    // SAFETY: a launched VMCS: VMLAUNCH fails with error 4 before any entry.
    let o = unsafe { insn::enter(&mut vm.regs, false) }
        .err()
        .unwrap_or(Outcome::Succeed);
    expect(&mut r, "vmlaunch launched vmcs", o, Outcome::FailValid(4));

    // VMXOFF: out of VMX operation.
    expect(&mut r, "vmxoff", vmxoff(), Outcome::Succeed);
    expect_fault(
        &mut r,
        "vmread after vmxoff",
        p_vmread,
        u64::from(GUEST_RIP),
        (UD, 0),
    );
    expect_fault(&mut r, "vmxoff after vmxoff", p_vmxoff, 0, (UD, 0));
    let cr4 = read_cr4();
    // SAFETY: outside VMX operation VMXE may be cleared.
    unsafe { write_cr4(cr4 & !vmx::CR4_VMXE) };
    r.expect_eq(
        format_args!("CR4.VMXE cleared after VMXOFF"),
        read_cr4() & vmx::CR4_VMXE,
        0,
    );
    r.finish()
}
